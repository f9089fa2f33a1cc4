"""A finished run's traces, stimuli and posterior summaries as NWB files, one per recording."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def export_nwb(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    subject: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write each recording of a run as an NWB file (:func:`cainfer.extract.write_nwb`).

    Parameters
    ----------
    run_dir : path
        A directory written by :func:`~cainfer.pipeline.run_pipeline`.
    out_dir : path, optional
        Where the files go (``<recording>.nwb``); default ``<run_dir>/nwb``.
    subject : mapping, optional
        The imaged animal (see :func:`cainfer.extract.write_nwb`); NWB files
        want at least its age and species.

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    ValueError
        If the directory lacks ``traces.nc``, ``summary.csv`` or
        ``provenance.json`` (the run has not finished).
    """
    import xarray as xr

    from cainfer.extract import write_nwb
    from cainfer.pipeline.config import load_config
    from cainfer.pipeline.run import _read_provenance

    run = Path(run_dir)
    need = ("traces.nc", "summary.csv", "provenance.json")
    missing = [n for n in need if not (run / n).is_file()]
    if missing:
        raise ValueError(f"{run}: no {' or '.join(missing)}; is this a finished cainfer run?")
    prov = _read_provenance(run / "provenance.json")
    with open(run / "summary.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cfg = None
    try:
        cfg = load_config(prov["config_file"])
    except Exception as e:  # moved or edited since the run: the traces and summaries remain
        warnings.warn(
            f"{run}: its config {prov.get('config_file')!r} cannot be read ({e}); the NWB files "
            "hold no stimulus",
            UserWarning,
            stacklevel=2,
        )
    recordings = {r.name: r for r in cfg.recordings} if cfg is not None else {}
    out = Path(out_dir) if out_dir is not None else run / "nwb"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tree = xr.open_datatree(run / "traces.nc", engine="h5netcdf")
    try:
        for name, node in tree.children.items():
            ds = node.to_dataset().load()
            rec = recordings.get(name)
            stim = cfg.stimulus_for(rec) if cfg is not None and rec is not None else None
            indicator = cfg.model["indicator"] if cfg is not None else "unknown"
            mine = [r for r in rows if r["recording"] == name]
            written.append(
                write_nwb(
                    ds,
                    out / f"{name}.nwb",
                    summary=mine or None,
                    stimulus=stim,
                    subject=subject,
                    indicator=indicator,
                    session_description=f"cainfer run {run.name}: recording {name}",
                )
            )
    finally:
        tree.close()
    return written
