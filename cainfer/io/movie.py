"""Lazy, chunked access to calcium-imaging movies stored as TIFF files (or in NWB files)."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import tifffile

_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_TIME_AXES = "TQIZ"  # axes that can stand for time once the others are resolved


class MovieError(ValueError):
    """A movie file cannot be read as a recording; the message names the file."""


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``f2.tif`` before ``f10.tif``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


@dataclass
class _Source:
    """One TIFF file: where its frames are and how to read them."""

    path: Path
    n_frames: int
    frame_shape: tuple[int, int]
    dtype: np.dtype[Any]
    frame_interval: float | None
    n_channels: int
    # contiguous uncompressed data: byte offset, and whether channels are outermost
    data_offset: int | None
    channels_first: bool
    # otherwise: page index of (frame, channel) in the series
    page_index: np.ndarray | None
    series: int = 0
    interval_problem: str | None = None
    _tiff: tifffile.TiffFile | None = None
    _fh: Any = None

    def _read_contiguous(self, start: int, stop: int, channel: int) -> np.ndarray:
        # Plain positioned reads rather than a memory map: mapped file pages would
        # count towards the resident memory of a streaming pass over a large file.
        assert self.data_offset is not None
        if self._fh is None:
            self._fh = open(self.path, "rb")  # closed by Movie.close
        frame = self.frame_shape[0] * self.frame_shape[1]
        k = stop - start
        if self.channels_first or self.n_channels == 1:
            first = channel * self.n_frames + start if self.channels_first else start
            self._fh.seek(self.data_offset + first * frame * self.dtype.itemsize)
            a = np.fromfile(self._fh, dtype=self.dtype, count=k * frame)
            out = a.reshape(k, *self.frame_shape)
        else:
            self._fh.seek(self.data_offset + start * self.n_channels * frame * self.dtype.itemsize)
            a = np.fromfile(self._fh, dtype=self.dtype, count=k * self.n_channels * frame)
            out = a.reshape(k, self.n_channels, *self.frame_shape)[:, channel]
        return out.astype(self.dtype.newbyteorder("="), copy=False)

    def read(self, start: int, stop: int, channel: int) -> np.ndarray:
        try:
            if self.data_offset is not None:
                return self._read_contiguous(start, stop, channel)
            assert self.page_index is not None
            keys = self.page_index[start:stop, channel].tolist()
            if self._tiff is None:  # kept open: tifffile caches the page index
                self._tiff = tifffile.TiffFile(self.path)
            data = self._tiff.asarray(key=keys, series=self.series)
            return np.asarray(data).reshape(len(keys), *self.frame_shape)
        except MovieError:
            raise
        except Exception as e:
            raise MovieError(f"{self.path}: cannot read frames {start}-{stop - 1}: {e}") from e


# time units as ImageJ (``tunit``) and OME (``TimeIncrementUnit``) write them, in s
_TIME_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "ms": 1e-3, "msec": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3,
    "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "\\u00b5s": 1e-6, "usec": 1e-6, "microsecond": 1e-6,
    "microseconds": 1e-6, "ns": 1e-9, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
}  # fmt: skip


def _seconds(
    value: Any, unit: str, bad_value: str, bad_unit: str
) -> tuple[float | None, str | None]:
    """``value`` in ``unit`` (a key of :data:`_TIME_UNITS`, or ``"1/s"`` for a rate) as s.

    Returns ``(seconds, None)``, or ``(None, problem)`` with ``bad_value`` or
    ``bad_unit`` as the problem.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (np.isfinite(v) and v > 0):
        return None, bad_value
    if unit == "1/s":
        return 1.0 / v, None
    scale = _TIME_UNITS.get(unit.lower())
    return (None, bad_unit) if scale is None else (v * scale, None)


def _frame_interval(tf: tifffile.TiffFile) -> tuple[float | None, str | None]:
    """Seconds between frames from ImageJ or OME metadata, if present.

    Returns ``(interval, problem)``: ``problem`` says why metadata that
    states an interval cannot be used (an unknown time unit, a value that
    is not a positive number); it matters only when no frame rate is given.
    """
    if tf.is_imagej and tf.imagej_metadata:
        md = tf.imagej_metadata
        unit = str(md.get("tunit", "s") or "s").strip()
        if md.get("finterval"):
            value = md["finterval"]
            return _seconds(
                value, unit,
                f"the ImageJ header's finterval = {value!r} {unit} is not a positive number",
                f"the ImageJ header's time unit tunit = {unit!r} is not known",
            )  # fmt: skip
        if md.get("fps"):
            value = md["fps"]
            return _seconds(
                value, "1/s", f"the ImageJ header's fps = {value!r} is not a positive number", ""
            )
    if tf.is_ome and tf.ome_metadata:
        m = re.search(r'TimeIncrement="([^"]+)"', tf.ome_metadata)
        if m:
            u = re.search(r'TimeIncrementUnit="([^"]+)"', tf.ome_metadata)
            unit = u.group(1) if u else "s"
            return _seconds(
                m.group(1), unit,
                f"the OME TimeIncrement {m.group(1)!r} is not a positive number",
                f"the OME TimeIncrementUnit {unit!r} is not known",
            )  # fmt: skip
    return None, None


@dataclass
class _NwbSource(_Source):
    """A ``TwoPhotonSeries`` stored inside an NWB (HDF5) file, read by h5py."""

    dataset: str = ""

    def read(self, start: int, stop: int, channel: int) -> np.ndarray:
        import h5py

        try:
            if self._fh is None:
                self._fh = h5py.File(self.path, "r")  # closed by Movie.close
            a = np.asarray(self._fh[self.dataset][start:stop])
            return a.astype(self.dtype.newbyteorder("="), copy=False)
        except Exception as e:
            raise MovieError(f"{self.path}: cannot read frames {start}-{stop - 1}: {e}") from e


def _nwb_sources(path: Path) -> list[_Source]:
    """The ``TwoPhotonSeries`` of an NWB file (frames ``(time, x, y)`` as stored).

    Its data in the file, or the TIFF files it names (``external_file``,
    relative to the NWB file). The frame rate is the series' ``rate`` (or
    its timestamps' median interval).
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as e:
        raise MovieError(f"{path}: cannot open as NWB/HDF5 ({type(e).__name__}: {e})") from None
    with f:
        found = nwb_groups(f, "TwoPhotonSeries")
        if not found:
            raise MovieError(f"{path}: holds no TwoPhotonSeries (an NWB movie)")
        if len(found) > 1:
            raise MovieError(
                f"{path}: holds {len(found)} TwoPhotonSeries ({', '.join(found)}); write the "
                "one to analyse to a file of its own"
            )
        g = f[found[0]]
        interval = None
        if "starting_time" in g and "rate" in g["starting_time"].attrs:
            interval = 1.0 / float(g["starting_time"].attrs["rate"])
        elif "timestamps" in g and g["timestamps"].shape[0] > 1:
            interval = float(np.median(np.diff(np.asarray(g["timestamps"]))))
        if "external_file" in g:  # the frames are in the files it names (format "external")
            files = [path.parent / _text(x) for x in np.asarray(g["external_file"]).ravel()]
            sources = [src for p in files for src in _open_source(p)]
            for src in sources:
                src.frame_interval = interval if interval is not None else src.frame_interval
            return sources
        data = g["data"]
        if data.ndim != 3:
            raise MovieError(
                f"{path}: {found[0]} has data of shape {data.shape}; a movie of one plane "
                "(frames, x, y) is needed"
            )
        return [_NwbSource(
            path=path, n_frames=int(data.shape[0]), frame_shape=(int(data.shape[1]),
            int(data.shape[2])), dtype=np.dtype(data.dtype), frame_interval=interval,
            n_channels=1, data_offset=None, channels_first=False, page_index=None,
            dataset=data.name,
        )]  # fmt: skip


def nwb_groups(f: Any, neurodata_type: str) -> list[str]:
    """Paths of the groups of an open NWB (h5py) file with that ``neurodata_type``."""
    import h5py

    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and _text(obj.attrs.get("neurodata_type", "")) == (
            neurodata_type
        ):
            found.append(name)

    f.visititems(visit)
    return found


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _open_source(path: Path) -> list[_Source]:
    """The sources of one file: one per image series that holds frames of the recording."""
    if not path.is_file():
        raise MovieError(f"{path}: no such file")
    if path.suffix.lower() == ".nwb":
        return _nwb_sources(path)
    try:
        tf = tifffile.TiffFile(path)
    except tifffile.TiffFileError as e:
        raise MovieError(f"{path}: not a TIFF file ({e})") from None
    except Exception as e:
        raise MovieError(f"{path}: cannot open as TIFF ({e})") from None
    with tf:
        try:
            return _sources_of(path, tf)
        except MovieError:
            raise
        except Exception as e:  # tifffile reads lazily: a damaged file fails here
            raise MovieError(
                f"{path}: truncated or corrupt TIFF ({type(e).__name__}: {e})"
            ) from None


def _sources_of(path: Path, tf: tifffile.TiffFile) -> list[_Source]:
    """The sources of an open file (see :func:`_open_source`)."""
    if not tf.series:
        raise MovieError(f"{path}: holds no image series")
    interval = _frame_interval(tf)
    if tf.is_ome and len(tf.series) > 1:
        shapes = ", ".join(f"{s.axes} {tuple(s.shape)}" for s in tf.series)
        raise MovieError(
            f"{path}: holds {len(tf.series)} OME images ({shapes}); cainfer reads one "
            "image per file: save each image (field of view, position) as its own file"
        )
    first = _series_source(path, tf, 0, interval)
    sources = [first]
    for i in range(1, len(tf.series)):
        series = tf.series[i]
        try:
            src = _series_source(path, tf, i, interval)
        except MovieError:
            src = None
        if src is None or (src.frame_shape, src.dtype, src.n_channels) != (
            first.frame_shape, first.dtype, first.n_channels
        ):  # fmt: skip
            warnings.warn(
                f"{path}: image series {i} ({series.axes} {tuple(series.shape)} "
                f"{series.dtype}) does not match the recording's frames "
                f"({first.frame_shape} {first.dtype}, series 0); it is not read",
                stacklevel=4,
            )
            continue
        sources.append(src)
    return sources


def _series_source(
    path: Path, tf: tifffile.TiffFile, index: int, interval: tuple[float | None, str | None]
) -> _Source:
    """Where the frames of image series ``index`` of an open file are."""
    series = tf.series[index]
    axes, shape = series.axes, tuple(series.shape)
    where = f"{path}" if len(tf.series) == 1 else f"{path} (image series {index})"
    if "S" in axes:
        raise MovieError(f"{where}: RGB/multi-sample images are not supported (axes {axes})")
    if axes[-2:] != "YX":
        raise MovieError(f"{where}: expected the last two axes to be YX, found {axes}")
    # the leading axes in order: a file may name an axis twice (two unknown 'Q' axes)
    lead = list(zip(axes[:-2], shape[:-2], strict=True))
    chans = [n for a, n in lead if a == "C"]
    if len(chans) > 1:
        raise MovieError(f"{where}: axes {axes} name more than one channel axis")
    n_channels = int(chans[0]) if chans else 1
    others = [(i, a, n) for i, (a, n) in enumerate(lead) if a != "C"]
    # every non-channel axis longer than 1 is time, and there may be only one
    long = [(i, a, n) for i, a, n in others if n > 1]
    if len(long) > 1:
        raise MovieError(
            f"{where}: axes {axes} with shape {shape}: more than one non-channel axis "
            f"({', '.join(a for _, a, _ in long)}) is longer than 1; expected one time axis "
            "(save the movie as (time, y, x), or as an ImageJ hyperstack with its axes named)"
        )
    if long and long[0][1] not in _TIME_AXES:
        raise MovieError(f"{where}: cannot use axis {long[0][1]!r} of {axes} as time")
    n_frames = int(long[0][2]) if long else 1
    frame_shape = (int(shape[-2]), int(shape[-1]))
    dtype = np.dtype(series.dtype)
    # channels outermost: the channel axis comes before the time axis (pages in that order)
    c_first = bool(chans) and bool(long) and axes.index("C") < long[0][0]
    declared = (tf.imagej_metadata or {}).get("images") if tf.is_imagej else None
    if declared and int(declared) > n_frames * n_channels:
        raise MovieError(
            f"{where}: truncated or corrupt: the ImageJ header declares {declared} images, "
            f"{n_frames * n_channels} can be read"
        )
    page_index = None
    nbytes = n_frames * n_channels * frame_shape[0] * frame_shape[1] * dtype.itemsize
    offset = series.dataoffset
    if offset is not None:
        size = path.stat().st_size
        if offset + nbytes > size:
            raise MovieError(
                f"{where}: truncated: {nbytes} bytes of image data expected from offset "
                f"{offset}, but the file has {size} bytes"
            )
        dtype = dtype.newbyteorder(tf.byteorder)
    else:
        grid = np.arange(n_frames * n_channels)
        page_index = (
            grid.reshape(n_channels, n_frames).T if c_first else grid.reshape(n_frames, n_channels)
        )
        n_pages = len(series.pages) if hasattr(series, "pages") else len(tf.pages)
        if n_pages < n_frames * n_channels:
            raise MovieError(
                f"{where}: truncated or corrupt: {n_pages} image pages found, "
                f"{n_frames * n_channels} expected"
            )
    return _Source(
        path, n_frames, frame_shape, dtype, interval[0], n_channels, offset, c_first, page_index,
        series=index, interval_problem=interval[1],
    )  # fmt: skip


def movie_files(
    path_or_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[Path]:
    """The files :func:`load_movie` reads for ``path_or_paths``, in reading order.

    A folder contributes its TIFF files (suffixes ``.tif``, ``.tiff``,
    ``.btf``, ``.tf8``, ``.tf2``, any case) in natural sort order.
    """
    return _expand(path_or_paths)


def _expand(path_or_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        p = Path(path_or_paths)
        if p.is_dir():
            files = [f for f in p.iterdir() if f.suffix.lower() in _TIFF_SUFFIXES and f.is_file()]
            if not files:
                raise MovieError(f"{p}: folder holds no TIFF files")
            return sorted(files, key=lambda f: natural_key(f.name))
        return [p]
    paths = [Path(x) for x in path_or_paths]
    if not paths:
        raise MovieError("no movie files given")
    return paths


class Movie:
    """A recording: one or more TIFF files read lazily as frames ``(time, y, x)``.

    Create with :func:`load_movie`. Frames are read on demand: by positioned
    reads where the file is uncompressed and contiguous, else page by page.

    Attributes
    ----------
    files : tuple of Path
        The files, in reading order.
    shape : tuple of int
        ``(n_frames, height, width)``.
    dtype : numpy.dtype
        Pixel type.
    frame_rate : float
        Frames per second.
    channel : int
        The channel read (0 for single-channel files).
    """

    def __init__(self, sources: Sequence[_Source], frame_rate: float, channel: int) -> None:
        self._sources = list(sources)
        self.files = tuple(dict.fromkeys(s.path for s in sources))  # a file may hold several series
        self.frame_rate = float(frame_rate)
        self.channel = int(channel)
        self.dtype = sources[0].dtype.newbyteorder("=")
        self._starts = np.cumsum([0] + [s.n_frames for s in sources])
        self.shape = (int(self._starts[-1]), *sources[0].frame_shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def time(self) -> np.ndarray:
        """Frame times (s), starting at 0."""
        return np.arange(len(self)) / self.frame_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start`` to ``stop − 1`` as an array ``(stop − start, y, x)``."""
        n = len(self)
        start, stop, _ = slice(start, stop).indices(n)
        parts = []
        for i, src in enumerate(self._sources):
            a, b = max(start, self._starts[i]), min(stop, self._starts[i + 1])
            if a < b:
                off = self._starts[i]
                parts.append(src.read(int(a - off), int(b - off), self.channel))
        if not parts:
            return np.empty((0, *self.shape[1:]), self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def iter_chunks(self, chunk: int = 256) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_frame, frames)`` in consecutive chunks of at most ``chunk`` frames."""
        if chunk < 1:
            raise ValueError(f"chunk = {chunk} must be ≥ 1")
        for a in range(0, len(self), chunk):
            yield a, self.read(a, min(a + chunk, len(self)))

    def close(self) -> None:
        """Close the open files."""
        for s in self._sources:
            if s._fh is not None:
                s._fh.close()
                s._fh = None
            if s._tiff is not None:
                s._tiff.close()
                s._tiff = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> Movie:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        src = self.files[0].name + (
            f" (+{len(self.files) - 1} files)" if len(self.files) > 1 else ""
        )
        return (
            f"Movie({src}, shape={self.shape}, dtype={self.dtype}, frame_rate={self.frame_rate:g})"
        )


def load_movie(
    path_or_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    frame_rate: float | None = None,
    channel: int | None = None,
) -> Movie:
    """Open a recording for lazy, chunked reading.

    Parameters
    ----------
    path_or_paths : path, folder, or sequence of paths
        A TIFF file (multi-page, BigTIFF, OME-TIFF or ImageJ hyperstack,
        including ImageJ files over 4 GB with a single header), a folder of
        TIFF files (read in natural sort order: ``f2`` before ``f10``), or a
        list of files read in the given order as one recording. An NWB file
        (``.nwb``) holding one ``TwoPhotonSeries`` of one plane is read from
        its data (frames as stored, ``(time, x, y)``) or from the TIFF files
        it names, at its ``rate``.
    frame_rate : float, optional
        Frames per second. Taken from ImageJ (``finterval``) or OME
        (``TimeIncrement``) metadata when not given; required otherwise.
    channel : int, optional
        Channel to read from multi-channel files (0-based); required when a
        file has more than one channel.

    Returns
    -------
    Movie

    Raises
    ------
    MovieError
        (a ``ValueError``) naming the file: not a TIFF, truncated or corrupt, a
        single 2-D image, frame shapes or channel counts that differ between
        files, an unknown channel, or no frame rate.
    """
    paths = _expand(path_or_paths)
    sources = [src for p in paths for src in _open_source(p)]
    first = sources[0]
    for s in sources[1:]:
        if s.frame_shape != first.frame_shape or s.dtype != first.dtype:
            raise MovieError(
                f"{s.path}: frames are {s.frame_shape} {s.dtype}, but {first.path.name} has "
                f"{first.frame_shape} {first.dtype}; all files of a recording must match"
            )
        if s.n_channels != first.n_channels:
            raise MovieError(
                f"{s.path}: {s.n_channels} channel(s), but {first.path.name} has {first.n_channels}"
            )
    n_ch = first.n_channels
    if channel is None:
        if n_ch > 1:
            raise MovieError(
                f"{first.path}: has {n_ch} channels; choose one with channel=0..{n_ch - 1}"
            )
        channel = 0
    elif not (isinstance(channel, (int, np.integer)) and 0 <= channel < n_ch):
        raise MovieError(
            f"{first.path}: unknown channel {channel!r}; the file has {n_ch} channel(s): "
            f"0..{n_ch - 1}"
        )
    total = sum(s.n_frames for s in sources)
    if total < 2:
        raise MovieError(f"{first.path}: a single 2-D image, not a movie (need ≥ 2 frames)")
    if frame_rate is None:
        intervals = {s.frame_interval for s in sources if s.frame_interval}
        problems = [s for s in sources if s.interval_problem]
        if problems:
            raise MovieError(
                f"{problems[0].path}: {problems[0].interval_problem}; pass frame_rate= (frames/s)"
            )
        if not intervals:
            raise MovieError(
                f"{first.path}: no frame rate in the file's metadata; pass frame_rate= (frames/s)"
            )
        if len(intervals) > 1 and (max(intervals) - min(intervals)) > 1e-6 * max(intervals):
            raise MovieError(
                f"files disagree on the frame interval ({sorted(intervals)} s); pass frame_rate="
            )
        frame_rate = 1.0 / intervals.pop()
    if not (np.isfinite(frame_rate) and frame_rate > 0):
        raise MovieError(f"frame_rate = {frame_rate!r} must be a finite number > 0 (frames/s)")
    return Movie(sources, frame_rate, int(channel))
