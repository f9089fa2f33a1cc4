"""Traces in and out of NWB files (Neurodata Without Borders, pynwb).

Reading: the ``ophys`` processing module's ROI responses (a ``Fluorescence``
container's raw fluorescence and neuropil ``RoiResponseSeries``, or
``DfOverF`` alone) and the ``PlaneSegmentation`` they refer to (image or
pixel masks) load as the traces Dataset :func:`cainfer.extract_traces`
returns. Writing: a traces Dataset (and, if given, the stimulus and a run's
posterior summaries) as an NWB file that ``nwbinspector`` accepts.

pynwb is imported here only (``pip install cainfer[nwb]``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from cainfer.extract.baseline import BaselineMethod
from cainfer.extract.imported import NEUROPIL_PRIOR_SD, _check_baseline, _dataset, _frame_rate
from cainfer.io.rois import paint_pixel_masks

#: how a neuropil series is told from the raw fluorescence: its name holds one of these
_NEUROPIL_NAMES = ("neuropil", "background")
_NOT_RAW = ("neuropil", "background", "deconv", "dff", "dfoverf", "spike")


def _pynwb() -> Any:
    try:
        import pynwb
    except ImportError:  # pragma: no cover - the nwb extra is part of the tests'
        raise ImportError(
            "NWB files need pynwb: pip install 'cainfer[nwb]' (or pip install pynwb)"
        ) from None
    return pynwb


def load_nwb(
    path: str | os.PathLike[str],
    *,
    neuropil: float = 0.7,
    baseline: BaselineMethod = "percentile",
    baseline_window: float = 60.0,
    baseline_percentile: float = 8.0,
    baseline_sigma: float = 1.0,
    frame_rate: float | None = None,
    series: str | None = None,
) -> xr.Dataset:
    """The ROI traces of an NWB file, as :func:`cainfer.extract_traces` returns them.

    Parameters
    ----------
    path : path
        An NWB (HDF5) file with an ``ophys`` processing module.
    neuropil : float
        Neuropil ratio r of the ΔF/F computed here and centre of the fit's
        prior on it (used when the file has a neuropil series).
    baseline, baseline_window, baseline_percentile, baseline_sigma
        The baseline F0 (see :func:`cainfer.extract.baseline`).
    frame_rate : float, optional
        Frames per second; default the series' ``rate`` (or its timestamps').
    series : str, optional
        The ``RoiResponseSeries`` to fit, by name or as ``"container/name"``
        (e.g. ``"Fluorescence/Fluorescence"``); needed when the file holds
        more than one raw fluorescence series (several planes or channels).
        Default: the file's one raw series, else its one ΔF/F series. The
        neuropil series is the one over the same ROIs.

    Returns
    -------
    xarray.Dataset
        ``F``, ``F_neu`` (zeros without a neuropil series), ``F0``, ``dff``
        over ``(roi, time)``, ``masks`` and the rest of
        :func:`cainfer.extract_traces`'s Dataset, with ROI labels from the
        plane segmentation's ids; ``source_format`` ``"nwb"``. A file with
        ΔF/F only (``DfOverF``) gives ``dff`` alone, fitted with the ΔF/F
        observation.
    """
    pynwb = _pynwb()
    _check_baseline(baseline, 0.0)
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    try:
        io = pynwb.NWBHDF5IO(str(p), "r")
        nwb = io.read()
    except Exception as e:  # pynwb/hdmf raise many types for a file that is not NWB
        raise ValueError(f"{p}: not an NWB file ({type(e).__name__}: {e})") from None
    with io:
        if "ophys" not in nwb.processing:
            raise ValueError(f"{p}: no 'ophys' processing module (no ROI traces)")
        ophys = nwb.processing["ophys"]
        raws, neus, dffs = [], [], []  # (container/name, series)
        for container in ophys.data_interfaces.values():
            kind = type(container).__name__
            if kind not in ("Fluorescence", "DfOverF"):
                continue
            for name, one in container.roi_response_series.items():
                low, full = name.lower(), (f"{container.name}/{name}", one)
                if kind == "DfOverF" or "dff" in low or "dfoverf" in low:
                    dffs.append(full)
                elif any(w in low for w in _NEUROPIL_NAMES):
                    neus.append(full)
                elif not any(w in low for w in _NOT_RAW) and container.name != "Deconvolved":
                    raws.append(full)
        raw, dff = _choose_series(p, series, raws, dffs, neus)
        main = raw if raw is not None else dff
        assert main is not None
        neu = _matching(p, main, neus) if raw is not None else None
        data = np.asarray(main.data[:], dtype=float)
        if data.ndim == 1:
            data = data[:, None]
        T = data.shape[0]
        fs = _series_rate(main, frame_rate, p)
        table = main.rois.table
        rows = np.asarray(main.rois.data[:], dtype=np.intp)
        labels = np.asarray(table.id[:])[rows]
        masks = _masks(table, rows, p)
        mean = np.zeros(masks.shape[1:])
        if neu is not None:
            neu_data = np.asarray(neu.data[:], dtype=float).reshape(T, -1)
            if neu_data.shape != data.shape:
                raise ValueError(f"{p}: neuropil series {neu.name!r} is {neu_data.shape}, "
                                 f"{main.name!r} {data.shape}")  # fmt: skip
        dff_data = None if dff is None else np.asarray(dff.data[:], dtype=float).reshape(T, -1)
    opts = dict(method=baseline, window=baseline_window, percentile=baseline_percentile,
                sigma=baseline_sigma)  # fmt: skip
    if raw is None:  # ΔF/F alone
        assert dff_data is not None
        ds = xr.Dataset(
            {"dff": (("roi", "time"), dff_data.T), "masks": (("roi", "y", "x"), masks)},
            coords={"roi": labels, "time": ("time", np.arange(T) / fs, {"units": "s"})},
            attrs={"frame_rate": fs},
        )
    else:
        F = data.T
        F_neu = neu_data.T if neu is not None else np.zeros_like(F)
        r = float(neuropil) if neu is not None else 0.0
        ds = _dataset(F, F_neu, masks, labels=labels, frame_rate=fs, ratio=r, mean_image=mean,
                      baseline=opts, where=p)  # fmt: skip
        if neu is not None:
            ds.attrs["neuropil_prior"] = json.dumps([r, NEUROPIL_PRIOR_SD])
        ds.attrs["neuropil"] = json.dumps({"ratio": r, "source": getattr(neu, "name", None)})
    ds.attrs.update(source_format="nwb", source_files=json.dumps([str(p)]),
                    nwb_series=str(main.name))  # fmt: skip
    return ds


def _choose_series(
    where: Path,
    series: str | None,
    raws: list[tuple[str, Any]],
    dffs: list[tuple[str, Any]],
    neus: list[tuple[str, Any]],
) -> tuple[Any, Any]:
    """``(raw, dff)``: the series to fit, raw fluorescence or (without one) ΔF/F."""
    if series is not None:
        if not isinstance(series, str) or not series:
            raise ValueError(f"series = {series!r}: the name of a RoiResponseSeries")
        named = [(n, s) for n, s in raws + dffs + neus if series in (n, n.split("/", 1)[1])]
        if len(named) != 1:
            listed = ", ".join(n for n, _ in raws + dffs) or "none"
            why = "no" if not named else f"{len(named)}"
            raise ValueError(
                f"{where}: {why} RoiResponseSeries named {series!r} (raw or ΔF/F: {listed}); "
                'give it as "container/name"'
            )
        if any(named[0][1] is s for _, s in neus):
            raise ValueError(f"{where}: series {series!r} is a neuropil trace, not the cell's")
        if any(named[0][1] is s for _, s in dffs):
            return None, named[0][1]
        return named[0][1], None
    if not raws and not dffs:
        raise ValueError(f"{where}: no RoiResponseSeries in a Fluorescence or DfOverF container")
    for kind, found in (("raw fluorescence", raws), ("ΔF/F", dffs)):
        if len(found) > 1:
            names = ", ".join(n for n, _ in found)
            raise ValueError(
                f"{where}: {len(found)} {kind} series ({names}); choose one with series="
            )
        if found:
            return (found[0][1], None) if kind == "raw fluorescence" else (None, found[0][1])
    raise AssertionError("unreachable")


def _matching(where: Path, main: Any, found: list[tuple[str, Any]]) -> Any:
    """The one neuropil series of ``found`` over the ROIs of ``main`` (None: the file has none)."""
    if not found:
        return None

    def rois(s: Any) -> tuple[Any, list[int]]:
        table = s.rois.table
        return getattr(table, "object_id", id(table)), np.asarray(s.rois.data[:]).tolist()

    same = [(n, s) for n, s in found if rois(s) == rois(main)]
    if len(same) != 1:
        names = ", ".join(n for n, _ in (same or found))
        why = "several" if same else "none"
        raise ValueError(f"{where}: neuropil series {names}: {why} over the ROIs of "
                         f"{main.name!r}; one is needed")  # fmt: skip
    return same[0][1]


def _series_rate(series: Any, given: float | None, where: Path) -> float:
    rate = getattr(series, "rate", None)
    if rate is None and getattr(series, "timestamps", None) is not None:
        ts = np.asarray(series.timestamps[:], dtype=float)
        rate = 1.0 / float(np.median(np.diff(ts))) if ts.size > 1 else None
    return _frame_rate(given, rate, where, f"{series.name}.rate")


def _masks(table: Any, rows: np.ndarray, where: Path) -> np.ndarray:
    cols = table.colnames
    if "image_mask" in cols:
        masks = np.stack([np.asarray(table["image_mask"][int(i)]) for i in rows])
        return masks > 0
    if "pixel_mask" in cols:
        # (x, y, weight) rows; a pixel of weight ≤ 0 is not in the ROI
        pix = [np.asarray([tuple(q)[:3] for q in table["pixel_mask"][int(i)]], dtype=float)
               for i in rows]  # fmt: skip
        return paint_pixel_masks(pix, _frame_shape(table, pix), where=f"{where}: {table.name}")
    raise ValueError(f"{where}: plane segmentation {table.name!r} has no image or pixel masks")


def _frame_shape(table: Any, pix: list[np.ndarray]) -> tuple[int, int]:
    dims = None
    for series in getattr(table, "reference_images", None) or ():
        data = getattr(series, "data", None)
        if data is not None and np.ndim(data) >= 2:
            dims = np.shape(data)[-2:]
    if dims is None:
        ys = max(int(xy[:, 1].max()) for xy in pix) + 1
        xs = max(int(xy[:, 0].max()) for xy in pix) + 1
        dims = (ys, xs)
    return int(dims[0]), int(dims[1])


def write_nwb(
    traces: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    summary: Any = None,
    stimulus: Any = None,
    session_description: str = "calcium imaging traces and cainfer posteriors",
    session_start_time: datetime | None = None,
    indicator: str = "unknown",
    location: str = "unknown",
    subject: Mapping[str, Any] | None = None,
) -> Path:
    """Write traces (and stimulus, posterior summaries) to an NWB file.

    Parameters
    ----------
    traces : xarray.Dataset
        As :func:`cainfer.extract_traces` returns (``F``, ``F_neu``, ``dff``
        over ``(roi, time)``, ``masks``); ``F``/``F_neu`` are optional.
    path : path
        The ``.nwb`` file to write (written to a temporary name, then renamed).
    summary : pandas.DataFrame or path, optional
        Posterior summaries, one row per ROI and parameter (a run's
        ``summary.csv``, or :func:`cainfer.pipeline.run.fit_rows`'s rows):
        written as the table ``posterior_summaries`` of the processing module
        ``misc``.
    stimulus : Stimulus, optional
        Its events, written as the stimulus ``TimeSeries`` ``stimulus_events``
        (timestamps: the events, data: their weights).
    session_description : str
        The session's description.
    session_start_time : datetime, optional
        Timezone-aware start of the session; default now (UTC).
    indicator, location : str
        The indicator and the imaged brain area, recorded on the imaging plane.
    subject : mapping, optional
        The imaged animal, as :class:`pynwb.file.Subject` takes it
        (``subject_id``, ``species``, ``sex``, ``age`` as an ISO 8601
        duration such as ``"P90D"``, ...); ``subject_id`` defaults to
        ``"unknown"`` and ``sex`` to ``"U"``. NWB files describe their
        subject: without ``age`` (or ``date_of_birth``) ``nwbinspector``
        reports a critical finding.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    pynwb = _pynwb()
    from pynwb.ophys import (
        DfOverF,
        Fluorescence,
        ImageSegmentation,
        OpticalChannel,
    )

    out = Path(path)
    if "dff" not in traces or traces["dff"].dims != ("roi", "time"):
        raise ValueError("traces need 'dff' over (roi, time), as cainfer.extract_traces returns")
    if "masks" not in traces:
        raise ValueError("traces need 'masks' (roi, y, x): NWB ROI responses refer to ROIs")
    start = session_start_time or datetime.now(UTC)
    if start.tzinfo is None:
        raise ValueError("session_start_time must be timezone-aware")
    fs = float(traces.attrs.get("frame_rate", 0.0)) or float(
        1.0 / np.median(np.diff(traces["time"].values))
    )
    nwb = pynwb.NWBFile(
        session_description=session_description,
        identifier=str(uuid.uuid4()),
        session_start_time=start,
        source_script="cainfer",
        source_script_file_name="cainfer",
        subject=pynwb.file.Subject(**{"subject_id": "unknown", "sex": "U", **dict(subject or {})}),
    )
    device = nwb.create_device(name="Microscope", description="imaging device of the recording")
    plane = nwb.create_imaging_plane(
        name="ImagingPlane", optical_channel=OpticalChannel(
            name="OpticalChannel", description="the recorded channel", emission_lambda=np.nan),
        description="the recorded plane", device=device, excitation_lambda=np.nan,
        indicator=indicator, location=location,
    )  # fmt: skip
    ophys = nwb.create_processing_module(name="ophys", description="ROI traces (cainfer)")
    seg = ImageSegmentation(name="ImageSegmentation")
    ophys.add(seg)
    ps = seg.create_plane_segmentation(
        name="PlaneSegmentation", description="the ROIs of the traces", imaging_plane=plane
    )
    labels = traces["roi"].values
    for label, mask in zip(labels, traces["masks"].values, strict=True):
        ps.add_roi(image_mask=np.asarray(mask, dtype=float), id=int(label))
    region = ps.create_roi_table_region(region=list(range(labels.size)), description="all ROIs")
    raw = [(var, name, desc) for var, name, desc in (
        ("F", "RoiResponseSeries", "ROI mean fluorescence (counts)"),
        ("F_neu", "Neuropil", "neuropil around each ROI (counts)"),
    ) if var in traces and np.any(traces[var].values)]  # fmt: skip
    if raw:
        fl = Fluorescence(name="Fluorescence")
        ophys.add(fl)  # first: a series' ROI region must share an ancestor with it
        for var, name, desc in raw:
            fl.create_roi_response_series(
                name=name, data=np.ascontiguousarray(traces[var].values.T), rois=region,
                unit="n.a.", rate=fs, description=desc,
            )  # fmt: skip
    dfof = DfOverF(name="DfOverF")
    ophys.add(dfof)
    dfof.create_roi_response_series(
        name="RoiResponseSeries", data=np.ascontiguousarray(traces["dff"].values.T), rois=region,
        unit="n.a.", rate=fs, description="ΔF/F = (F − r·F_neu − F0)/F0",
    )  # fmt: skip
    if stimulus is not None and len(stimulus.events):
        nwb.add_stimulus(pynwb.TimeSeries(
            name="stimulus_events", data=np.asarray(stimulus.weights, dtype=float),
            timestamps=np.asarray(stimulus.events, dtype=float), unit="n.a.",
            description="stimulus events (s) and their weights (1)",
        ))  # fmt: skip
    if summary is not None:
        _add_summary(nwb, summary)
    tmp = out.with_name(f".{out.stem}.{uuid.uuid4().hex}.tmp.nwb")
    try:
        with pynwb.NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _add_summary(nwb: Any, summary: Any) -> None:
    import pandas as pd
    from hdmf.common import DynamicTable

    df = pd.read_csv(summary) if isinstance(summary, str | os.PathLike) else pd.DataFrame(summary)
    if df.empty:
        return
    for col in df.columns:  # a summary.csv read as text: its numbers as numbers
        try:
            df[col] = df[col].astype(float)
        except (TypeError, ValueError):
            df[col] = df[col].astype(str)
    what = "posterior mean, sd and 94% HDI of each fitted parameter"
    table = DynamicTable(name="posterior_summaries", description=what)
    for col in df.columns:
        table.add_column(name=str(col), description=f"{col} (cainfer summary.csv)")
    for row in df.itertuples(index=False):
        table.add_row(**{str(k): _cell(v) for k, v in zip(df.columns, row, strict=True)})
    mod = nwb.create_processing_module(name="misc", description="cainfer posterior summaries")
    mod.add(table)


def _cell(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    return str(v) if not isinstance(v, int | float) else v
