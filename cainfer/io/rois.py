"""ROI files: label images, mask stacks and ImageJ ROIs, read to and written from masks.

Masks are boolean arrays ``(n_rois, height, width)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import roifile
import tifffile

from cainfer._files import atomic_path

_IJ = roifile.ROI_TYPE


def masks_from_labels(labels: np.ndarray, *, source: str = "label image") -> np.ndarray:
    """Masks ``(n, y, x)`` from a 2-D label image (0 = background), in label order."""
    lab = np.asarray(labels)
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(
            f"{source}: a label image must be a 2-D integer array, got {lab.dtype} {lab.shape}"
        )
    if np.any(lab < 0):
        raise ValueError(f"{source}: label image has negative labels")
    ids = np.unique(lab)
    ids = ids[ids != 0]
    if ids.size == 0:
        raise ValueError(f"{source}: label image holds no ROI (all zero)")
    return lab[None, :, :] == ids[:, None, None]


def check_masks(masks: np.ndarray, *, source: str = "masks") -> np.ndarray:
    """Validate a mask stack: 3-D, boolean-like, no empty ROI. Returns it as bool."""
    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"{source}: masks must be (n_rois, height, width), got shape {m.shape}")
    if m.dtype != bool:
        if not np.all((m == 0) | (m == 1)):
            raise ValueError(f"{source}: a mask stack must hold only 0/1 or booleans")
        m = m.astype(bool)
    empty = np.flatnonzero(~m.reshape(m.shape[0], -1).any(axis=1))
    if empty.size:
        raise ValueError(f"{source}: ROI(s) {empty.tolist()} are empty (no pixel)")
    return m


def _from_array(a: np.ndarray, source: str) -> np.ndarray:
    if a.ndim == 2:
        return masks_from_labels(a, source=source)
    return check_masks(a, source=source)


def _fill_polygon(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres lie inside a polygon (even-odd rule), ImageJ coordinates.

    Pixel (col, row) covers [col, col+1) x [row, row+1); its centre is at +0.5.
    """
    h, w = shape
    mask = np.zeros(shape, bool)
    r0, r1 = max(int(np.floor(y.min())), 0), min(int(np.ceil(y.max())) + 1, h)
    c0, c1 = max(int(np.floor(x.min())), 0), min(int(np.ceil(x.max())) + 1, w)
    if r0 >= r1 or c0 >= c1:
        return mask
    py = np.arange(r0, r1)[:, None] + 0.5
    px = np.arange(c0, c1)[None, :] + 0.5
    inside = np.zeros((r1 - r0, c1 - c0), bool)
    xa, ya = x, y
    xb, yb = np.roll(x, -1), np.roll(y, -1)
    for x1, y1, x2, y2 in zip(xa, ya, xb, yb, strict=True):
        if y1 == y2:
            continue
        crosses = (y1 > py) != (y2 > py)  # edge spans the row of pixel centres
        x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < x_at)
    mask[r0:r1, c0:c1] = inside
    return mask


def _imagej_mask(roi: roifile.ImagejRoi, shape: tuple[int, int], source: str) -> np.ndarray:
    h, w = shape
    mask = np.zeros(shape, bool)
    if roi.composite or roi.subtype not in (0, roifile.ROI_SUBTYPE.UNDEFINED):
        raise ValueError(f"{source}: ROI {roi.name!r}: composite or special ROIs are not supported")
    if roi.roitype == _IJ.RECT:
        mask[max(roi.top, 0) : min(roi.bottom, h), max(roi.left, 0) : min(roi.right, w)] = True
    elif roi.roitype == _IJ.OVAL:
        cy, cx = (roi.top + roi.bottom) / 2, (roi.left + roi.right) / 2
        ry, rx = (roi.bottom - roi.top) / 2, (roi.right - roi.left) / 2
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    elif roi.roitype in (_IJ.POLYGON, _IJ.FREEHAND, _IJ.TRACED):
        xy = np.asarray(roi.coordinates(), dtype=float)
        mask = _fill_polygon(xy[:, 0], xy[:, 1], shape)
    else:
        raise ValueError(
            f"{source}: ROI {roi.name!r} has type {roi.roitype.name}; supported: rectangle, "
            "oval, polygon, freehand, traced"
        )
    return mask


def read_rois(path: str | os.PathLike[str], *, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read ROIs as boolean masks ``(n_rois, height, width)``.

    Parameters
    ----------
    path : path-like
        ``.npy`` or ``.tif``/``.tiff`` holding a 2-D label image (0 =
        background, each other value one ROI, in increasing order) or a 3-D
        boolean/0-1 mask stack; an ImageJ ``.roi`` file or ``.zip`` of them
        (rectangle, oval, polygon, freehand and traced ROIs); or an NWB file
        (``.nwb``) with one ``PlaneSegmentation`` (its ``image_mask``, or its
        ``pixel_mask`` with ``shape`` given), a pixel in a ROI where its weight
        is > 0.
    shape : (int, int), optional
        Frame shape (pixels); required for ImageJ ROIs, checked otherwise.

    Returns
    -------
    numpy.ndarray
        Boolean masks.

    Raises
    ------
    ValueError
        Naming the file: unknown format, unreadable file, empty ROI, or a shape
        that does not match ``shape``.
    """
    path = Path(path)
    src = str(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ValueError(f"{src}: no such ROI file")
    try:
        if suffix == ".npy":
            masks = _from_array(np.load(path, allow_pickle=False), src)
        elif suffix in (".tif", ".tiff"):
            masks = _from_array(tifffile.imread(path), src)
        elif suffix == ".nwb":
            masks = check_masks(_nwb_masks(path, shape), source=src)
        elif suffix in (".roi", ".zip"):
            if shape is None:
                raise ValueError(f"{src}: ImageJ ROIs need the frame shape (shape=(height, width))")
            rois = roifile.roiread(path)
            rois = rois if isinstance(rois, list) else [rois]
            if not rois:
                raise ValueError(f"{src}: holds no ROI")
            masks = check_masks(np.stack([_imagej_mask(r, shape, src) for r in rois]), source=src)
        else:
            raise ValueError(
                f"{src}: unknown ROI format {suffix!r}; use .npy, .tif/.tiff, .roi, .zip or .nwb"
            )
    except ValueError as e:
        if str(e).startswith(src):
            raise
        raise ValueError(f"{src}: cannot read ROIs ({e})") from None
    except Exception as e:
        raise ValueError(f"{src}: cannot read ROIs ({type(e).__name__}: {e})") from None
    if shape is not None and masks.shape[1:] != tuple(shape):
        raise ValueError(f"{src}: ROIs are {masks.shape[1:]} pixels but frames are {tuple(shape)}")
    return masks


def _nwb_masks(path: Path, shape: tuple[int, int] | None) -> np.ndarray:
    """Masks ``(n, height, width)`` of the one ``PlaneSegmentation`` in an NWB file (h5py).

    Image masks in the axis order they are stored in (that of the file's
    movie frames); pixel masks' ``(x, y)`` as (column, row).
    """
    import h5py

    from cainfer.io.movie import nwb_groups

    with h5py.File(path, "r") as f:
        found = nwb_groups(f, "PlaneSegmentation")
        if len(found) != 1:
            raise ValueError(
                f"{path}: holds {len(found)} PlaneSegmentation tables"
                + (f" ({', '.join(found)})" if found else "")
                + "; one is needed"
            )
        g = f[found[0]]
        if "image_mask" in g:
            return np.asarray(g["image_mask"]) > 0
        if "pixel_mask" in g and "pixel_mask_index" in g:
            if shape is None:
                raise ValueError(
                    f"{path}: pixel masks need the frame shape (shape=(height, width))"
                )
            pix = np.asarray(g["pixel_mask"])
            ends = np.asarray(g["pixel_mask_index"], dtype=int)
            xyw = np.stack([np.asarray(pix[k], dtype=float) for k in pix.dtype.names[:3]], axis=1)
            rows = [xyw[a:b] for a, b in zip(np.r_[0, ends[:-1]], ends, strict=True)]
            return paint_pixel_masks(rows, shape, where=f"{path}: {found[0]}")
        raise ValueError(f"{path}: {found[0]} has neither image_mask nor pixel_mask")


def paint_pixel_masks(
    pixels: Sequence[np.ndarray], shape: tuple[int, int], *, where: str
) -> np.ndarray:
    """Boolean masks from NWB-style pixel masks.

    Parameters
    ----------
    pixels : sequence of numpy.ndarray
        One ``(n, 3)`` array per ROI of ``(x, y, weight)`` rows: ``x`` the
        column and ``y`` the row (as Suite2p's NWB exporter writes them),
        ``weight`` ≤ 0 for a pixel outside the ROI; ``(n, 2)`` rows without
        weights count every pixel.
    shape : (int, int)
        Frame shape ``(height, width)`` in pixels.
    where : str
        What the masks came from, for error messages.

    Returns
    -------
    numpy.ndarray
        ``(roi, height, width)`` bool.
    """
    masks = np.zeros((len(pixels), *shape), dtype=bool)
    for i, rows in enumerate(pixels):
        rows = np.asarray(rows, dtype=float)
        if rows.size == 0:
            continue
        rows = rows.reshape(-1, rows.shape[-1])
        if rows.shape[1] > 2:
            rows = rows[rows[:, 2] > 0]
        x, y = np.rint(rows[:, 0]).astype(int), np.rint(rows[:, 1]).astype(int)
        bad = (x < 0) | (y < 0) | (x >= shape[1]) | (y >= shape[0])
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{where}: ROI {i} has pixel (x={x[k]}, y={y[k]}) outside the "
                f"{shape[0]}x{shape[1]} frame"
            )
        masks[i, y, x] = True
    return masks


def _outline(mask: np.ndarray) -> np.ndarray:
    """Closed outline of a single simply connected mask along pixel edges, (x, y) corners.

    Raises ``ValueError`` for a mask of several pieces or with holes.
    """
    m = np.pad(mask, 1)
    nxt: dict[tuple[int, int], list[tuple[int, int]]] = {}
    n_edges = 0
    rows, cols = np.nonzero(mask)
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        pr, pc = r + 1, c + 1  # index into the padded mask
        sides = (
            (not m[pr - 1, pc], (c, r), (c + 1, r)),  # top, walked left to right
            (not m[pr, pc + 1], (c + 1, r), (c + 1, r + 1)),  # right, downwards
            (not m[pr + 1, pc], (c + 1, r + 1), (c, r + 1)),  # bottom, right to left
            (not m[pr, pc - 1], (c, r + 1), (c, r)),  # left, upwards
        )
        for boundary, a, b in sides:
            if boundary:
                nxt.setdefault(a, []).append(b)
                n_edges += 1
    start = min(nxt)
    loop = [start]
    cur = start
    used = 0
    while True:
        cur = nxt[cur].pop()
        used += 1
        if cur == start:
            break
        loop.append(cur)
    if used != n_edges:
        raise ValueError("not a single simply connected region")
    pts = np.array(loop, dtype=float)
    # drop corners where the outline goes straight on
    d_in = pts - np.roll(pts, 1, axis=0)
    d_out = np.roll(pts, -1, axis=0) - pts
    turn = d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0] != 0
    return pts[turn]


def write_rois(masks: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write masks ``(n_rois, height, width)`` so that :func:`read_rois` returns them.

    Parameters
    ----------
    masks : numpy.ndarray
        Boolean masks.
    path : path-like
        ``.npy`` (mask stack), ``.tif``/``.tiff`` (label image; ROIs must not
        overlap) or ``.zip`` (ImageJ traced ROIs; each ROI one connected piece
        without holes). Written atomically.

    Returns
    -------
    Path
        The path written.
    """
    m = check_masks(masks)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".tif", ".tiff", ".zip"):
        raise ValueError(f"{path}: unknown ROI format {suffix!r}; use .npy, .tif/.tiff or .zip")
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, m)
        elif suffix in (".tif", ".tiff"):
            if np.any(m.sum(axis=0) > 1):
                raise ValueError(f"{path}: ROIs overlap; a label image cannot hold them (use .npy)")
            if m.shape[0] > 65535:
                raise ValueError(f"{path}: more than 65535 ROIs do not fit a uint16 label image")
            labels = np.zeros(m.shape[1:], np.uint16)
            for i, mi in enumerate(m):
                labels[mi] = i + 1
            tifffile.imwrite(tmp, labels)
        elif suffix == ".zip":
            rois = []
            for i, mi in enumerate(m):
                try:
                    pts = _outline(mi)
                except ValueError as e:
                    raise ValueError(f"{path}: ROI {i} is {e}; save as .npy or .tif") from None
                roi = roifile.ImagejRoi.frompoints(pts, name=f"roi_{i:04d}")
                roi.roitype = _IJ.TRACED
                rois.append(roi)
            roifile.roiwrite(tmp, rois)
    return path
