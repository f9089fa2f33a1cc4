"""Run a pipeline config: extraction and fits per recording and ROI, resumable, on Dask.

A run directory holds::

    config.toml          the config as given
    provenance.json      config hash, input hashes, versions, seeds, times
    traces/<rec>.nc      ΔF/F and extraction products of each recording
    traces.nc            all recordings, one group each
    posteriors/<rec>/roi_<label>.nc   one fit per ROI (cainfer.load_fit)
    figures/<rec>/roi_<label>.png     data, predictive band, free Ca
    summary.csv          recording × ROI × parameter: mean, sd, HDI, R-hat, ESS, ok
    report.html          self-contained report

Every file is written to a temporary name and renamed, so a run killed at
any point leaves only whole files; started again it redoes only what is
missing, and the outputs equal those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cainfer._files import atomic_path, is_temporary, not_one_name, sweep_temporaries
from cainfer.pipeline.config import Config, ConfigError, Recording, load_config

SUMMARY_COLUMNS = (
    "recording", "roi", "parameter", "mean", "sd", "hdi94_lb", "hdi94_ub", "r_hat", "ess_bulk",
    "ess_tail", "ok",
)  # fmt: skip


class RunError(RuntimeError):
    """A run that cannot go on (the message says why and what to do)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def atomic_netcdf(data: Any, path: Path) -> None:
    """Write an xarray Dataset or DataTree to NetCDF (h5netcdf) through a temporary file."""
    with atomic_path(path) as tmp:
        data.to_netcdf(tmp, engine="h5netcdf")


def sha256_file(path: Path, *, block: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes (read in 4 MiB blocks)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def roi_seed(base: int, recording_index: int, roi_index: int) -> int:
    """Seed of one ROI's fit: independent streams from (base, recording, ROI)."""
    ss = np.random.SeedSequence([int(base), int(recording_index), int(roi_index)])
    return int(ss.generate_state(1, np.uint32)[0] >> 1)


def _input_files(cfg: Config, rec: Recording) -> list[Path]:
    """The files a recording's extraction reads (a movie's: those :func:`load_movie` opens)."""
    from cainfer.extract.imported import SUITE2P_FILES, _suite2p_plane
    from cainfer.io import movie_files

    if cfg.input_format == "suite2p":
        plane = _suite2p_plane(rec.path)
        return [plane / f for f in SUITE2P_FILES]
    if cfg.input_format in ("caiman", "nwb"):
        return [rec.path]
    return movie_files(rec.path)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("cainfer", "pymc", "pytensor", "arviz", "numpy", "numba", "nutpie", "xarray",
                "scipy", "scikit-image", "tifffile", "dask", "distributed"):  # fmt: skip
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# ---------------------------------------------------------------- tasks (run on workers)


def extract_task(cfg: Config, rec: Recording, out: Path) -> Path:
    """Extract one recording's traces to ``out`` (atomically)."""
    from cainfer.extract import extract_ratio, extract_traces, load_traces
    from cainfer.io import load_movie

    cal = cfg.calibration()
    if cfg.input_format != "tiff":
        ds = load_traces(rec.path, format=cfg.input_format, **cfg.import_options())  # type: ignore[arg-type]
    elif cal is not None:
        r = cfg.ratiometric
        ext = cfg.extraction
        keys = ("neuropil_inner", "neuropil_min_pixels", "min_area", "max_area", "upsample",
                "reference_frames", "max_shift")  # fmt: skip
        ds = extract_ratio(
            rec.path, rois=cfg.roi_source_for(rec), channels=tuple(r["channels"]),
            register=ext["register"], register_channel=r["register_channel"],
            background=r["background"], dark_level=ext["dark_level"], calibration=cal,
            frame_rate=cfg.frame_rate, chunk=ext["chunk"], **{k: ext[k] for k in keys},
        )  # fmt: skip
    else:
        with load_movie(rec.path, frame_rate=cfg.frame_rate, channel=cfg.channel) as movie:
            ds = extract_traces(movie, rois=cfg.roi_source_for(rec), **cfg.extraction)
    ds.attrs["recording"] = rec.name
    atomic_netcdf(ds, out)
    return out


def _fit_input(ds: Any, roi: Any) -> Any:
    """One ROI's traces as the fit reads them: raw F, neuropil, baseline and ΔF/F."""
    keep = [v for v in ("F", "F_neu", "F0", "dff", "F_bg") if v in ds]
    return ds[keep].sel(roi=[roi]).load()


def _fit_or_say_which(rec: Recording, roi: Any, *args: Any, **kwargs: Any) -> Any:
    from cainfer.infer import fit

    try:
        return fit(*args, **kwargs)
    except ValueError as e:
        raise ValueError(f"recording {rec.name!r}, ROI {roi}: {e}") from None


def fit_task(
    cfg: Config,
    rec: Recording,
    roi: Any,
    time_s: np.ndarray,
    traces: Any,
    seed: int,
    post: Path,
    fig: Path,
    cores: int,
) -> dict[str, Any]:
    """Fit one ROI, save its posterior and figure.

    Returns its diagnostics and its ``summary.csv`` rows (so that the run
    need not read the posterior back to summarise it).
    """
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diagnostics go to summary.csv and the report
        res = _fit_or_say_which(
            rec,
            roi,
            traces,
            cfg.cell_model(),
            stimulus=cfg.stimulus_for(rec),
            time=None if hasattr(traces, "data_vars") else time_s,
            free=cfg.model["free"],
            fixed=cfg.model["fixed"],
            priors=cfg.priors(),
            **cfg.fit_options(),
            seed=seed,
            cores=cores,
            progress=False,  # the run shows its own, over the ROIs
            **cfg.sampler,
        )
    res.settings["recording"] = rec.name
    res.settings["roi"] = roi
    fig.parent.mkdir(parents=True, exist_ok=True)
    post.parent.mkdir(parents=True, exist_ok=True)
    res.plot_trace(path=fig)
    res.save(post)
    return {
        "ok": res.ok,
        "problems": res.problems,
        "rows": fit_rows(res, rec.name, roi),
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------- the run


def _progress(total: int, label: str, enabled: bool) -> Any:
    if not enabled or total == 0:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    prog = Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=False)  # fmt: skip
    prog.start()
    prog.add_task(label, total=total)

    @contextlib.contextmanager
    def ctx() -> Iterator[Any]:
        try:
            yield prog
        finally:
            prog.stop()

    return ctx()


def _advance(prog: Any) -> None:
    if prog is not None:
        prog.advance(prog.task_ids[0])


class _Executor:
    """Serial in this process, or Dask distributed (local cluster or a scheduler address)."""

    def __init__(self, workers: int, scheduler: str | None):
        self.client: Any = None
        self.cluster: Any = None
        if scheduler is not None or workers > 1:
            from dask.distributed import Client, LocalCluster

            if scheduler is not None:
                self.client = Client(scheduler)
            else:
                self.cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    dashboard_address=None,
                )  # fmt: skip
                self.client = Client(self.cluster)

    def map(self, fn: Callable[..., Any], jobs: list[tuple[Any, ...]], on_done: Callable) -> None:
        """Run ``fn(*job)`` for every job; ``on_done(job, result)`` as each finishes."""
        if self.client is None:
            for job in jobs:
                on_done(job, fn(*job))
            return
        from dask.distributed import as_completed

        futures = {self.client.submit(fn, *job, pure=False): job for job in jobs}
        for fut in as_completed(list(futures)):
            on_done(futures[fut], fut.result())

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def run_pipeline(
    config: Config | str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Run a pipeline config to its run directory; resumes an interrupted run.

    Parameters
    ----------
    config : Config or path
        A config from :func:`~cainfer.pipeline.load_config`, or its TOML file.
    output : path, optional
        Run directory overriding the config's ``run.output``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``): fits go to
        its workers. Default: a local cluster of ``workers`` processes.
    workers : int, optional
        Worker processes of the local cluster (default: the config's
        ``parallel.workers``; ``"auto"`` is one per core). With one worker
        everything runs in this process.
    progress : bool
        Show progress bars on the terminal.

    Returns
    -------
    pathlib.Path
        The run directory.

    Notes
    -----
    A local cluster starts new Python processes: in a script, call this under
    ``if __name__ == "__main__":``.

    Raises
    ------
    ConfigError
        For a bad config (nothing is started).
    RunError
        When the run directory holds a run of a different config.
    """
    cfg = (
        config
        if isinstance(config, Config)
        else load_config(Path(config), output=None if output is None else Path(output))
    )
    out = Path(output) if output is not None else cfg.output
    n_cpu = os.cpu_count() or 1
    n_workers = workers if workers is not None else cfg.workers
    n_workers = n_cpu if n_workers == "auto" else int(n_workers)
    if n_workers < 1:
        raise ConfigError(f"workers = {n_workers!r} must be ≥ 1")
    cores = max(1, n_cpu // n_workers) if scheduler is None else 1

    _check_output(out)
    with _run_lock(out):
        prov_path = out / "provenance.json"
        prov = _start_provenance(cfg, out, prov_path, scheduler)
        atomic_write(out / "config.toml", cfg.text)
        sweep_temporaries(out)  # left by a killed run

        ex = _Executor(n_workers, scheduler)
        try:
            traces = _extract_all(cfg, out, ex, progress)
            fitted = _fit_all(cfg, out, traces, ex, progress, cores, prov)
        finally:
            ex.close()

        _write_traces(out, traces)
        rows = summary_rows(out, cfg, traces, fitted=fitted)
        write_summary(out / "summary.csv", rows)
        prov["finished"] = _now()
        atomic_write(prov_path, json.dumps(prov, indent=2))
        from cainfer.pipeline.report import _write_report

        _write_report(out, problems={k: r["problems"] for k, r in fitted.items()})
    return out


def _check_output(out: Path) -> None:
    """Refuse an output path that is a file, or a directory that is not a run's."""
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file, not a directory; give an output directory")
    if out.is_dir() and not (out / "provenance.json").is_file():
        others = [p.name for p in out.iterdir() if p.name != _LOCK_NAME]
        if others:
            raise RunError(f"{out} exists and is not a cainfer run directory; give another one")


# what a run's provenance.json holds, with the types a resumed run relies on
_PROVENANCE_TYPES = {"config_sha256": str, "inputs": dict, "roi_seeds": dict, "sessions": list}


def _read_provenance(path: Path) -> dict[str, Any]:
    """A run's provenance record, checked; a RunError names the file if it is damaged."""
    try:
        prior = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: cannot be read as a run's provenance ({e}); give another output "
                       "directory, or remove this one to start afresh") from None  # fmt: skip
    if not isinstance(prior, dict):
        raise RunError(f"{path}: not a run's provenance record (a JSON object)")
    for key, kind in _PROVENANCE_TYPES.items():
        if key in prior and not isinstance(prior[key], kind):
            raise RunError(f"{path}: {key} is a {type(prior[key]).__name__}, not a "
                           f"{kind.__name__}; the file is damaged")  # fmt: skip
    return prior


def _start_provenance(
    cfg: Config, out: Path, prov_path: Path, scheduler: str | None = None
) -> dict[str, Any]:
    prior: dict[str, Any] = {}
    if prov_path.is_file():
        prior = _read_provenance(prov_path)
        if prior.get("config_sha256") != cfg.sha256 and _has_results(out):
            raise RunError(
                f"{out} holds a run of another config (sha256 {prior.get('config_sha256')}); "
                "give another output directory or remove it"
            )
        if prior.get("config_sha256") != cfg.sha256:
            prior = {}  # a run that failed before any result: this config starts afresh
    inputs = {}
    for rec in cfg.recordings:
        for f in _input_files(cfg, rec):
            inputs[str(f)] = sha256_file(f)
    for f in cfg.stimulus_files():
        inputs[str(f)] = sha256_file(f)
    old_inputs = prior.get("inputs")
    if old_inputs is not None and old_inputs != inputs:
        changed = sorted(k for k in set(inputs) | set(old_inputs)
                         if inputs.get(k) != old_inputs.get(k))  # fmt: skip
        raise RunError(f"input files changed since this run started: {changed}; "
                       "give another output directory")  # fmt: skip
    prov = {
        "config_file": str(cfg.path),
        "config_sha256": cfg.sha256,
        "config": cfg.text,
        "inputs": inputs,
        "versions": _versions(),
        "seed": cfg.seed,
        "roi_seeds": prior.get("roi_seeds", {}),
        "started": prior.get("started", _now()),
        "sessions": [
            *prior.get("sessions", []),
            {"started": _now(), "host": platform.node(), "scheduler": scheduler},
        ],
        "finished": None,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(prov_path, json.dumps(prov, indent=2))
    return prov


def _readable(path: Path, kind: str) -> bool:
    """Whether a resumed run can use ``path``; a damaged file is set aside and redone.

    A file that cannot be opened (truncated, overwritten) is renamed to
    ``<name>.damaged``, kept rather than deleted, and named in a warning.
    """
    if not path.is_file():
        return False
    import h5py

    # h5py reads the root's attributes and names only (milliseconds), where xarray would
    # decode every group of a fit (about as long as loading it); HDF5 refuses a truncated
    # file on opening it
    try:
        with h5py.File(path, "r") as f:
            ok = "cainfer_model" in f.attrs if kind == "fit" else "dff" in f
    except Exception:  # h5py raises OSError, ValueError or its own types
        ok = False
    if not ok:
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        warnings.warn(
            f"{path}: the saved {kind} cannot be read; kept as {aside.name} and redone",
            stacklevel=3,
        )
    return ok


def _has_results(out: Path) -> bool:
    """Whether a run directory holds traces or fits (more than its config and provenance)."""
    return any(
        p.is_file() and not is_temporary(p.name)
        for sub in ("traces", "posteriors")
        if (out / sub).is_dir()
        for p in (out / sub).rglob("*")
    )


def _extract_all(cfg: Config, out: Path, ex: _Executor, progress: bool) -> dict[str, Any]:
    import xarray as xr

    paths = {rec.name: inside(out, out / "traces" / f"{rec.name}.nc") for rec in cfg.recordings}
    todo = [(cfg, rec, paths[rec.name]) for rec in cfg.recordings
            if not _readable(paths[rec.name], "traces")]  # fmt: skip
    with _progress(len(todo), "extraction", progress) as prog:
        ex.map(extract_task, todo, lambda job, res: _advance(prog))
    traces = {}
    for rec in cfg.recordings:
        with xr.open_dataset(paths[rec.name], engine="h5netcdf") as ds:
            traces[rec.name] = ds.load()
    return traces


def _selected(cfg: Config, ds: Any, rec: Recording) -> list[Any]:
    labels = [x.item() for x in ds["roi"].values]
    if cfg.roi_fit == "all":
        return labels
    missing = [r for r in cfg.roi_fit if r not in labels]
    if missing:
        raise ConfigError(f"{cfg.path}: [rois] fit: ROI(s) {missing} not in recording "
                          f"{rec.name!r} (ROIs: {labels})")  # fmt: skip
    return list(cfg.roi_fit)


def _fit_paths(out: Path, rec: str, roi: Any) -> tuple[Path, Path]:
    name = file_label(roi)
    return (
        inside(out, out / "posteriors" / rec / f"roi_{name}.nc"),
        inside(out, out / "figures" / rec / f"roi_{name}.png"),
    )


def file_label(label: Any) -> str:
    """An ROI label as part of a file name: refused if it could leave its folder.

    Raises
    ------
    RunError
        For an empty label, ``.``/``..``, path separators or control characters.
    """
    text = str(label)
    if not_one_name(text):
        raise RunError(
            f"ROI label {label!r} cannot be part of a file name (path separators, '..' or "
            "control characters); relabel the ROIs"
        )
    return text


def inside(out: Path, path: Path) -> Path:
    """``path``, after checking that it lies under the run directory ``out``."""
    if not path.resolve().is_relative_to(out.resolve()):
        raise RunError(f"{path} would lie outside the run directory {out}; nothing was written")
    return path


_LOCK_NAME = ".cainfer.lock"


@contextlib.contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """Hold the run directory for this process: a second run into it is refused.

    An advisory ``flock`` on a file in the directory; the system releases it
    when the process ends, however it ends, so a killed run does not leave
    the directory locked.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / _LOCK_NAME
    fh = open(path, "a+", encoding="utf-8")
    try:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): no lock
            yield
            return
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            who = fh.read().strip() or "another process"
            raise RunError(
                f"{out} is in use by another cainfer run ({who}); wait for it to finish or "
                "give another output directory"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {platform.node()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


def _fit_all(
    cfg: Config,
    out: Path,
    traces: dict[str, Any],
    ex: _Executor,
    progress: bool,
    cores: int,
    prov: dict[str, Any],
) -> dict[tuple[str, Any], dict[str, Any]]:
    """Fit every selected ROI not fitted yet; returns the new fits' results by (recording, ROI)."""
    jobs = []
    seeds = prov["roi_seeds"]
    for i, rec in enumerate(cfg.recordings):
        ds = traces[rec.name]
        labels = [x.item() for x in ds["roi"].values]
        for roi in _selected(cfg, ds, rec):
            seed = roi_seed(cfg.seed, i, labels.index(roi))
            seeds[f"{rec.name}/{roi}"] = seed
            post, fig = _fit_paths(out, rec.name, roi)
            if _readable(post, "fit") and fig.is_file():
                continue
            one = _fit_input(ds, roi)
            jobs.append((cfg, rec, roi, ds["time"].values, one, seed, post, fig, cores))
    atomic_write(out / "provenance.json", json.dumps(prov, indent=2))
    done: dict[tuple[str, Any], dict[str, Any]] = {}

    def finished(job: tuple[Any, ...], result: dict[str, Any]) -> None:
        done[(job[1].name, job[2])] = result
        _advance(prog)

    with _progress(len(jobs), "fits", progress) as prog:
        ex.map(fit_task, jobs, finished)
    return done


def _write_traces(out: Path, traces: dict[str, Any]) -> None:
    import xarray as xr

    tree = xr.DataTree.from_dict({f"/{name}": ds for name, ds in traces.items()})
    atomic_netcdf(tree, out / "traces.nc")


def summary_rows(
    out: Path,
    cfg: Config,
    traces: dict[str, Any],
    *,
    fitted: dict[tuple[str, Any], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per recording × ROI × parameter.

    The rows of the fits this run made come from ``fitted`` (what
    :func:`fit_task` returned); those of fits an earlier, interrupted run
    saved are read from their posterior files.
    """
    from cainfer.infer import load_fit

    fitted = fitted or {}
    rows = []
    for rec in cfg.recordings:
        for roi in _selected(cfg, traces[rec.name], rec):
            if (rec.name, roi) in fitted:
                rows += fitted[(rec.name, roi)]["rows"]
                continue
            post, _ = _fit_paths(out, rec.name, roi)
            rows += fit_rows(load_fit(post), rec.name, roi)
    return rows


def fit_rows(res: Any, recording: str, roi: Any) -> list[dict[str, Any]]:
    """The ``summary.csv`` rows of one fit (one per reported variable)."""
    s = res.summary(round_to="none")
    stats = SUMMARY_COLUMNS[3:-1]
    return [
        {"recording": recording, "roi": roi, "parameter": name,
         **{c: s.loc[name, c] for c in stats}, "ok": res.ok}
        for name in s.index
    ]  # fmt: skip


def _fmt(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, float | np.floating):
        v = float(v)
        return repr(v) if math.isfinite(v) else "nan"
    return str(v)


def write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``summary.csv`` (atomically; floats as their shortest exact repr)."""
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(SUMMARY_COLUMNS)
    for row in rows:
        wr.writerow([_fmt(row[c]) for c in SUMMARY_COLUMNS])
    atomic_write(path, buf.getvalue())
