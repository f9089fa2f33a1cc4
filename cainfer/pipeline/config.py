"""Pipeline configuration: a TOML file, validated before any work starts.

Every table and key is listed in :data:`SCHEMA` (and in the README). Unknown
keys, wrong types and values outside what is allowed raise :class:`ConfigError`
naming the file and the key. Relative paths are relative to the directory of
the config file.
"""

from __future__ import annotations

import glob
import hashlib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np

from cainfer._checks import repeated
from cainfer._files import not_one_name
from cainfer._options import (
    FIT_DEFAULTS,
    Adaptation,
    Coordinates,
    Drift,
    Likelihood,
    Observation,
    Residuals,
)
from cainfer.extract import BASELINE_METHODS
from cainfer.extract.options import RULES, option_problem
from cainfer.forward import (
    PRESETS,
    CellModel,
    Prior,
    Stimulus,
    get_indicator,
    indicator_names,
    preset,
)
from cainfer.forward._params import _PRIOR_KINDS
from cainfer.forward.ratiometric import RatioCalibration, get_ratiometric


class ConfigError(ValueError):
    """A config file that cannot be run: the message names the file and key."""


_NUM = (int, float)
# table -> key -> (allowed types, default, description); None default: optional
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any, str]]] = {
    "run": {
        "name": ((str,), "", "label of the run (default: the config file's stem)"),
        "output": ((str,), "runs/{name}", "output directory; {name} is replaced"),
        "seed": ((int,), 0, "base seed; each ROI's seed is derived from it"),
    },
    "inputs": {
        "files": (
            (list, str),
            None,
            "TIFF files, folders of TIFFs, Suite2p plane folders, CaImAn or NWB files, or globs; "
            "one recording each",
        ),
        "format": (
            (str,),
            "tiff",
            '"tiff" (movies, extracted here), "suite2p" (plane folders), "caiman" (HDF5 '
            'results) or "nwb" (ROI responses): the segmentation\'s traces, with raw F and '
            "neuropil",
        ),
        "frame_rate": (_NUM, None, "frames/s (default: from the TIFF metadata)"),
        "channel": ((int,), None, "channel of multi-channel files (0-based)"),
        "series": (
            (str,),
            None,
            'NWB: the RoiResponseSeries to fit, by name or "container/name" (needed when a '
            "file holds several raw series: planes, channels)",
        ),
    },
    "extraction": {
        "register": ((bool,), True, "rigid motion correction"),
        "neuropil": (_NUM, 0.7, "neuropil contamination ratio (0: none)"),
        "dark_level": (_NUM, 0.0, "counts a pixel reads with no light, subtracted from F"),
        "baseline": ((str,), "percentile", f"one of {', '.join(BASELINE_METHODS)}"),
        "baseline_window": (_NUM, 60.0, "baseline window (s)"),
        "baseline_percentile": (_NUM, 8.0, "baseline percentile (0-100)"),
        "baseline_sigma": (_NUM, 1.0, "maximin smoothing (s)"),
        "neuropil_inner": (_NUM, 4.0, "gap between ROI and neuropil annulus (pixels)"),
        "neuropil_min_pixels": ((int,), 350, "minimum annulus size (pixels)"),
        "min_area": ((int,), 20, "smallest detected ROI (pixels)"),
        "max_area": ((int,), 400, "largest detected ROI (pixels)"),
        "reference_frames": ((int,), 50, "frames averaged into the registration reference"),
        "upsample": ((int,), 20, "registration precision, 1/upsample pixel"),
        "max_shift": (
            _NUM,
            None,
            "largest registration shift searched (pixels; default: a tenth of the frame's "
            "larger side)",
        ),
        "chunk": ((int,), 128, "frames read at a time"),
    },
    "rois": {
        "source": ((str,), "auto", '"auto" (detect), or an ROI file; {stem} is the recording'),
        "fit": ((list, str), "all", '"all" or a list of ROI labels to fit'),
    },
    "stimulus": {
        "file": ((str,), None, "CSV: time_s, and weight or waveform knots; {stem} allowed"),
        "events": ((list,), None, "event times (s)"),
        "onsets": ((list,), None, "burst onsets (s), with burst and interval"),
        "burst": ((int,), 1, "events per onset"),
        "interval": (_NUM, 0.02, "time between events of a burst (s)"),
    },
    "model": {
        "preset": ((str,), "pumps", f"one of {', '.join(PRESETS)}"),
        "indicator": ((str,), "OGB-1", "indicator name from the catalogue"),
        "indicator_kinetics": ((str,), "equilibrium", '"equilibrium" or "kinetic" binding'),
        "k_off": (_NUM, None, "indicator unbinding rate (1/s): prior centre of a kinetic fit"),
        "switch_ratio": (_NUM, 0.0, "kinetic binding's switch ratio φ (0: one step)"),
        "free": ((list,), None, "free parameters (default: the model's usual set)"),
        "fixed": ((dict,), {}, "parameter = value for parameters held fixed"),
        "priors": ((dict,), {}, "parameter = {kind, a, b}: prior of a free parameter"),
        "observation": (
            (str,),
            FIT_DEFAULTS["observation"],
            '"auto", "fluorescence", "dff", "dff_exact" or "ratio"',
        ),
        "likelihood": ((str,), FIT_DEFAULTS["likelihood"], '"normal" or "student_t"'),
        "residuals": ((str,), FIT_DEFAULTS["residuals"], '"ar1" or "white"'),
        "drift": ((str,), FIT_DEFAULTS["drift"], '"smooth" (slow baseline) or "none"'),
        "drift_timescale": (
            _NUM,
            FIT_DEFAULTS["drift_timescale"],
            "time scale of the slow baseline (s)",
        ),
    },
    "sampler": {
        "draws": ((int,), FIT_DEFAULTS["draws"], "draws per chain"),
        "tune": ((int,), FIT_DEFAULTS["tune"], "tuning steps per chain"),
        "chains": ((int,), FIT_DEFAULTS["chains"], "chains"),
        "target_accept": (_NUM, FIT_DEFAULTS["target_accept"], "target acceptance probability"),
        "adaptation": ((str,), FIT_DEFAULTS["adaptation"], '"low_rank" or "diag"'),
        "coordinates": ((str,), FIT_DEFAULTS["coordinates"], '"per_buffer" or "natural"'),
        "substeps": (
            (int, str),
            FIT_DEFAULTS["substeps"],
            '"auto" or solver steps per frame (see cainfer.fit)',
        ),
    },
    "parallel": {
        "workers": ((int, str), "auto", '"auto" (one per core) or a number of worker processes'),
    },
    "ratiometric": {
        "dye": ((str,), None, "a ratiometric dye (Fura-2, Indo-1): two channels, fitted together"),
        "channels": ((list,), [0, 1], "numerator and denominator channels (0-based)"),
        "r_min": (_NUM, None, "ratio of the calcium-free dye on this setup"),
        "r_max": (_NUM, None, "ratio of the calcium-saturated dye on this setup"),
        "beta": (_NUM, None, "denominator channel's brightness, free over bound dye"),
        "background": (_NUM, 1.0, "multiple of the annulus background subtracted per channel"),
        "register_channel": ((int,), 1, "which of the two channels to register on: 0 or 1"),
    },
}
_REQUIRED = {("inputs", "files")}
#: what ``[inputs] files`` are
INPUT_FORMATS = ("tiff", "suite2p", "caiman", "nwb")


@dataclass(frozen=True)
class Recording:
    """One input recording: its name (unique in the run) and its file or folder."""

    name: str
    path: Path


@dataclass(frozen=True)
class Config:
    """A validated pipeline configuration (see :data:`SCHEMA`)."""

    path: Path
    text: str
    sha256: str
    name: str
    output: Path
    seed: int
    recordings: tuple[Recording, ...]
    frame_rate: float | None
    channel: int | None
    extraction: dict[str, Any]
    roi_source: str
    roi_fit: str | tuple[Any, ...]
    stimulus: dict[str, Any]
    model: dict[str, Any]
    sampler: dict[str, Any]
    workers: int | str
    raw: dict[str, Any] = field(repr=False)
    ratiometric: dict[str, Any] = field(default_factory=dict)
    input_format: str = "tiff"

    def import_options(self) -> dict[str, Any]:
        """What :func:`cainfer.extract.load_traces` takes for a Suite2p or CaImAn recording."""
        ext = self.extraction
        opts: dict[str, Any] = {
            k: ext[k]
            for k in ("baseline", "baseline_window", "baseline_percentile", "baseline_sigma")
        }
        opts["frame_rate"] = self.frame_rate
        if self.input_format == "suite2p":
            opts["dark_level"] = ext["dark_level"]
            # the plane's own neucoeff unless the config names a ratio
            opts["neuropil"] = self.raw.get("extraction", {}).get("neuropil")
        if self.input_format == "nwb":
            opts["neuropil"] = ext["neuropil"]
            if self.raw.get("inputs", {}).get("series") is not None:
                opts["series"] = self.raw["inputs"]["series"]
        return opts

    def calibration(self) -> RatioCalibration | None:
        """The ``[ratiometric]`` dye's calibration on this setup (None: one channel)."""
        r = self.ratiometric
        if not r or r.get("dye") is None:
            return None
        return get_ratiometric(r["dye"]).calibration(
            r_min=float(r["r_min"]), r_max=float(r["r_max"]), beta=float(r["beta"]),
            source=f"config {self.path.name}: [ratiometric]",
        )  # fmt: skip

    def cell_model(self) -> CellModel:
        """The cell model the config names (a ratiometric dye's numerator channel, if any)."""
        cal = self.calibration()
        ind = (
            get_indicator(self.model["indicator"])
            if cal is None
            else get_ratiometric(self.ratiometric["dye"]).indicator(cal, channel=0)
        )
        k_off = self.model["k_off"]
        if k_off is not None:
            ind = ind.with_(
                k_off=float(k_off),
                k_on=float(k_off) / ind.kd**ind.hill,
                kinetics_source=f"config {self.path.name}: [model] k_off",
            )
        if self.model["switch_ratio"]:
            ind = ind.with_(switch_ratio=float(self.model["switch_ratio"]))
        return preset(
            self.model["preset"], ind, indicator_kinetics=self.model["indicator_kinetics"]
        )

    def fit_options(self) -> dict[str, Any]:
        """The observation settings of ``[model]``, as keywords of :func:`cainfer.fit`."""
        keys = ("observation", "likelihood", "residuals", "drift", "drift_timescale")
        return {k: self.model[k] for k in keys}

    def priors(self) -> dict[str, Prior]:
        """Priors of the config as :class:`~cainfer.forward.Prior` objects."""
        return {k: Prior(v["kind"], float(v["a"]), float(v.get("b", 0.0)), "config") for k, v in
                self.model["priors"].items()}  # fmt: skip

    def stimulus_for(self, recording: Recording) -> Stimulus:
        """The stimulus of one recording."""
        s = self.stimulus
        if s.get("file") is not None:
            return Stimulus.from_csv(self._per_recording(s["file"], recording))
        if s.get("events") is not None:
            return Stimulus(events=np.asarray(s["events"], dtype=float))
        return Stimulus.train(np.asarray(s["onsets"], float), n=s["burst"], interval=s["interval"])

    def roi_source_for(self, recording: Recording) -> str | Path:
        """``"auto"`` or the ROI file of one recording."""
        if self.roi_source == "auto":
            return "auto"
        return self._per_recording(self.roi_source, recording)

    def _per_recording(self, pattern: str, recording: Recording) -> Path:
        stem = recording.path.stem if recording.path.is_file() else recording.path.name
        return self.path.parent / pattern.replace("{stem}", stem)

    def stimulus_files(self) -> list[Path]:
        """Stimulus and ROI files the run reads (for provenance)."""
        out = []
        for rec in self.recordings:
            if self.stimulus.get("file") is not None:
                out.append(self._per_recording(self.stimulus["file"], rec))
            if self.roi_source != "auto":
                out.append(self._per_recording(self.roi_source, rec))
        return sorted(set(out))


def _err(path: Path, where: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: [{where}] {msg}")


def load_config(path: str | Path, *, output: str | Path | None = None) -> Config:
    """Read and validate a pipeline config.

    Parameters
    ----------
    path : path
        The TOML file.
    output : path, optional
        Output directory overriding ``run.output`` (relative to the current
        directory).

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        (a ``ValueError``) naming the file and the key: a file that is not
        TOML, an unknown table or key, a wrong type, a value outside what is
        allowed, a missing input, stimulus or ROI file, or model parameters
        that the model does not have.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    base = path.resolve().parent
    vals = _typed(path, raw)

    run, inp, ext, rois, stim, mod, smp = (vals[t] for t in
        ("run", "inputs", "extraction", "rois", "stimulus", "model", "sampler"))  # fmt: skip
    name = run["name"] or path.stem
    _check_name(path, name, given=bool(run["name"]))
    if run["seed"] < 0:
        raise _err(path, "run", f"seed = {run['seed']!r} must be ≥ 0")
    out = Path(output) if output is not None else base / run["output"].replace("{name}", name)

    files = [inp["files"]] if isinstance(inp["files"], str) else inp["files"]
    if not files or not all(isinstance(f, str) for f in files):
        raise _err(path, "inputs", "files must be a non-empty list of paths or globs")
    recordings: list[Recording] = []
    fmt = inp["format"]
    if fmt not in INPUT_FORMATS:
        raise _err(path, "inputs", f"format = {fmt!r}; allowed: {', '.join(INPUT_FORMATS)}")
    for pattern in files:
        matches = sorted(glob.glob(str(base / pattern)))
        if not matches:
            raise _err(path, "inputs", f"files: {pattern!r} matches no file under {base}")
        for m in matches:
            p = Path(m)
            if fmt == "suite2p" and not p.is_dir():
                raise _err(path, "inputs", f"files: {p} is not a Suite2p plane folder")
            if fmt in ("caiman", "nwb") and not p.is_file():
                raise _err(path, "inputs", f"files: {p} is not a {fmt} file")
            if fmt == "suite2p":  # plane folders are all called plane0: name them by their path
                rel = p.resolve().relative_to(base) if p.resolve().is_relative_to(base) else p
                recordings.append(Recording("_".join(rel.parts[-4:]), p))
            else:
                recordings.append(Recording(p.stem if p.is_file() else p.name, p))
    names = [r.name for r in recordings]
    dup = repeated(names)
    if dup:
        raise _err(path, "inputs", f"files: recordings with the same name {dup}; rename them")
    for key in ("frame_rate", "channel"):
        if (problem := option_problem(key, inp[key])) is not None:
            raise _err(path, "inputs", f"{key} = {inp[key]!r} {problem}")

    if ext["baseline"] not in BASELINE_METHODS:
        raise _err(path, "extraction", f"baseline = {ext['baseline']!r}; allowed: "
                   f"{', '.join(BASELINE_METHODS)}")  # fmt: skip
    for key, value in ext.items():
        if key in RULES and (problem := option_problem(key, value)) is not None:
            raise _err(path, "extraction", f"{key} = {value!r} {problem}")
    if not 0 < ext["min_area"] <= ext["max_area"]:
        raise _err(path, "extraction", "need 0 < min_area ≤ max_area")

    fit_rois: str | tuple[Any, ...] = rois["fit"]
    if isinstance(fit_rois, str):
        if fit_rois != "all":
            raise _err(path, "rois", f'fit = {fit_rois!r}: "all" or a list of ROI labels')
    else:
        if not fit_rois:
            raise _err(path, "rois", "fit: an empty list fits nothing")
        bad = [v for v in fit_rois if isinstance(v, bool) or not isinstance(v, int | str)]
        if bad:
            raise _err(path, "rois", f"fit = {fit_rois!r}: ROI labels are integers or names, "
                       f"not {bad[0]!r}")  # fmt: skip
        dup = repeated(fit_rois)
        if dup:
            raise _err(path, "rois", f"fit = {fit_rois!r} names ROI(s) {', '.join(dup)} more "
                       "than once")  # fmt: skip
        fit_rois = tuple(fit_rois)

    given = [k for k in ("file", "events", "onsets") if stim[k] is not None]
    if len(given) != 1:
        raise _err(path, "stimulus", f"give exactly one of file, events, onsets (got {given})")
    for key in ("events", "onsets"):
        if stim[key] is not None:
            bad = [v for v in stim[key] if not isinstance(v, _NUM) or not math.isfinite(v)]
            if bad or not stim[key]:
                raise _err(path, "stimulus", f"{key} must be a non-empty list of times (s)")
    if stim["burst"] < 1 or not stim["interval"] > 0:
        raise _err(path, "stimulus", "burst must be ≥ 1 and interval > 0")

    if mod["preset"] not in PRESETS:
        raise _err(path, "model", f"preset = {mod['preset']!r}; allowed: {', '.join(PRESETS)}")
    if mod["indicator"] not in indicator_names():
        raise _err(path, "model", f"indicator = {mod['indicator']!r}; allowed: "
                   f"{', '.join(indicator_names())}")  # fmt: skip
    if mod["indicator_kinetics"] not in ("equilibrium", "kinetic"):
        raise _err(path, "model", f"indicator_kinetics = {mod['indicator_kinetics']!r}; "
                   "allowed: equilibrium, kinetic")  # fmt: skip
    k_off = mod["k_off"]
    if k_off is not None and not (math.isfinite(k_off) and k_off > 0):
        raise _err(path, "model", f"k_off = {k_off!r} must be a positive rate (1/s)")
    phi = mod["switch_ratio"]
    if not (math.isfinite(phi) and phi >= 0):
        raise _err(path, "model", f"switch_ratio = {phi!r} must be a number ≥ 0")
    if phi and mod["indicator_kinetics"] != "kinetic":
        raise _err(path, "model", 'switch_ratio needs indicator_kinetics = "kinetic"')
    if mod["indicator_kinetics"] == "kinetic" and k_off is None:
        known = get_indicator(mod["indicator"]).k_off
        if known is None:
            raise _err(path, "model", f"indicator_kinetics = \"kinetic\" needs k_off (1/s): "
                       f"the catalogue has no binding rates for {mod['indicator']}")  # fmt: skip
    for key, prior in mod["priors"].items():
        _check_prior(path, key, prior)
    for key, value in mod["fixed"].items():
        if not isinstance(value, _NUM) or isinstance(value, bool):
            raise _err(path, "model", f"fixed.{key} = {value!r} is not a number")

    allowed = {"adaptation": get_args(Adaptation), "coordinates": get_args(Coordinates)}
    for key, options in allowed.items():
        if smp[key] not in options:
            raise _err(path, "sampler", f"{key} = {smp[key]!r}; allowed: {', '.join(options)}")
    if isinstance(smp["substeps"], str) and smp["substeps"] != "auto":
        raise _err(path, "sampler", f"substeps = {smp['substeps']!r}; allowed: \"auto\" or an "
                   "integer ≥ 1")  # fmt: skip
    for key in ("draws", "chains", "substeps", "tune"):
        low = 0 if key == "tune" else 1
        if key == "substeps" and smp[key] == "auto":
            continue
        if smp[key] < low:
            raise _err(path, "sampler", f"{key} = {smp[key]!r} must be ≥ {low}")
    if not 0 < smp["target_accept"] < 1:
        raise _err(path, "sampler", f"target_accept = {smp['target_accept']!r} must lie in (0, 1)")
    model_choices = {
        "observation": get_args(Observation),
        "likelihood": get_args(Likelihood),
        "residuals": get_args(Residuals),
        "drift": get_args(Drift),
    }
    for key, choices in model_choices.items():
        if mod[key] not in choices:
            raise _err(path, "model", f"{key} = {mod[key]!r}; allowed: {', '.join(choices)}")
    if not (math.isfinite(mod["drift_timescale"]) and mod["drift_timescale"] > 0):
        raise _err(path, "model", f"drift_timescale = {mod['drift_timescale']!r} must be > 0 s")

    ratio = vals["ratiometric"]
    if ratio["dye"] is not None:
        try:
            get_ratiometric(ratio["dye"])
        except ValueError as e:
            raise _err(path, "ratiometric", f"dye: {e}") from None
        missing = [k for k in ("r_min", "r_max", "beta") if ratio[k] is None]
        if missing:
            raise _err(path, "ratiometric", f"{', '.join(missing)} required with a dye: this "
                       "setup's calibration (calcium-free and saturating solutions)")  # fmt: skip
        try:
            RatioCalibration(ratio["r_min"], ratio["r_max"], ratio["beta"], kd=1.0)
        except ValueError as e:
            raise _err(path, "ratiometric", str(e)) from None
        ch = ratio["channels"]
        if not (len(ch) == 2 and all(isinstance(c, int) and c >= 0 for c in ch) and ch[0] != ch[1]):
            raise _err(path, "ratiometric", f"channels = {ch!r}: two different channels ≥ 0")
        if ratio["register_channel"] not in (0, 1):
            raise _err(path, "ratiometric", "register_channel must be 0 or 1")
        if not (math.isfinite(ratio["background"]) and ratio["background"] >= 0):
            raise _err(path, "ratiometric", "background must be a multiple ≥ 0")
        if inp["channel"] is not None:
            raise _err(path, "inputs", "channel is for one-channel fits; a [ratiometric] dye "
                       "reads the two channels it names")  # fmt: skip
        if mod["observation"] not in ("auto", "ratio"):
            raise _err(path, "model", f"observation = {mod['observation']!r}: a ratiometric "
                       'recording is fitted with "ratio" (or "auto")')  # fmt: skip
    elif any(ratio[k] is not None for k in ("r_min", "r_max", "beta")):
        raise _err(path, "ratiometric", "r_min, r_max and beta need a dye")
    if fmt != "tiff":
        theirs = f"{fmt} input brings its own ROIs and traces (one channel); leave it out"
        if ratio["dye"] is not None:
            raise _err(path, "ratiometric", f"dye: {theirs}")
        if inp["channel"] is not None:
            raise _err(path, "inputs", f"channel: {theirs}")
        if rois["source"] != "auto":
            raise _err(path, "rois", f"source: {theirs}")
    if inp["series"] is not None and fmt != "nwb":
        why = f"series names an NWB file's RoiResponseSeries; format is {fmt!r}"
        raise _err(path, "inputs", why)

    workers = vals["parallel"]["workers"]
    if (isinstance(workers, str) and workers != "auto") or (
        isinstance(workers, int) and workers < 1
    ):
        raise _err(path, "parallel", f'workers = {workers!r}: "auto" or a number ≥ 1')

    cfg = Config(
        path=path.resolve(),
        text=text,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        name=name,
        output=out,
        seed=run["seed"],
        recordings=tuple(recordings),
        frame_rate=None if inp["frame_rate"] is None else float(inp["frame_rate"]),
        channel=inp["channel"],
        extraction=dict(ext),
        roi_source=rois["source"],
        roi_fit=fit_rois,
        stimulus=dict(stim),
        model=dict(mod),
        sampler=dict(smp),
        workers=workers,
        raw=raw,
        ratiometric=dict(ratio),
        input_format=fmt,
    )
    _check_model(cfg)
    for f in cfg.stimulus_files():
        if not f.is_file():
            raise _err(path, "stimulus" if f.suffix == ".csv" else "rois", f"no such file: {f}")
    return cfg


# what each prior family's a and b are (Prior's docstring)
_PRIOR_ARGS = {
    "lognormal": ("a (median)", "b (sigma of the log)"),
    "normal": ("a (mean)", "b (sd)"),
    "uniform": ("a (lower)", "b (upper)"),
    "halfnormal": ("a (sd)",),
}


def _check_prior(path: Path, key: str, prior: Any) -> None:
    """A ``[model] priors`` entry: a table ``{kind, a, b}`` with finite numbers, checked."""
    if not isinstance(prior, dict) or set(prior) - {"kind", "a", "b"} or "kind" not in prior:
        raise _err(path, "model", f"priors.{key}: expected a table {{kind, a, b}}")
    kind = prior["kind"]
    if kind not in _PRIOR_KINDS:
        raise _err(path, "model", f"priors.{key}.kind = {kind!r}; allowed: "
                   f"{', '.join(_PRIOR_KINDS)}")  # fmt: skip
    needed = _PRIOR_ARGS[kind]
    for arg in needed:
        k = arg[0]
        v = prior.get(k)
        if v is None:
            raise _err(path, "model", f"priors.{key}: a {kind} prior needs {arg}")
        if isinstance(v, bool) or not isinstance(v, _NUM) or not math.isfinite(v):
            raise _err(path, "model", f"priors.{key}.{k} = {v!r} must be a finite number")
    try:
        Prior(kind, float(prior["a"]), float(prior.get("b", 0.0)), "config")
    except ValueError as e:
        raise _err(path, "model", f"priors.{key}: {e}") from None


def _check_name(path: Path, name: str, *, given: bool) -> None:
    """A run name is one folder name: no separators, no ``..``, nothing hidden or special."""
    what = f"name = {name!r}" if given else f"name {name!r} (the config file's stem)"
    # beyond one name: nothing hidden, nothing another file system would refuse
    if not_one_name(name) or name.startswith(".") or any(c in name for c in ':*?"<>|'):
        raise _err(path, "run", f"{what}: a run name is one folder name, without path "
                   'separators, a leading dot or any of : * ? " < > |')  # fmt: skip


def _typed(path: Path, raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every table with its keys type-checked and defaults filled in."""
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {unknown}; allowed: {', '.join(SCHEMA)}")
    out: dict[str, dict[str, Any]] = {}
    for table, keys in SCHEMA.items():
        given = raw.get(table, {})
        if not isinstance(given, dict):
            raise _err(path, table, "must be a table")
        bad = sorted(set(given) - set(keys))
        if bad:
            raise _err(path, table, f"unknown key(s) {bad}; allowed: {', '.join(keys)}")
        vals: dict[str, Any] = {}
        for key, (types, default, desc) in keys.items():
            if key not in given:
                if (table, key) in _REQUIRED:
                    raise _err(path, table, f"{key} is required ({desc})")
                vals[key] = default
                continue
            v = given[key]
            ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
            if not ok:
                names = " or ".join(t.__name__ for t in types)
                raise _err(path, table, f"{key} = {v!r} must be {names} ({desc})")
            vals[key] = v
        out[table] = vals
    return out


def _check_model(cfg: Config) -> None:
    """Free, fixed and priors against the model's parameters (as :func:`cainfer.fit` does)."""
    from cainfer.infer.fit import _validated

    model = cfg.cell_model()
    options = {**cfg.sampler, **cfg.fit_options(), "sampler": "nutpie", "backend": "numba",
               "progress": False}  # fmt: skip
    try:
        _, fixed, _ = _validated(
            model, cfg.model["free"], cfg.model["fixed"], cfg.priors(), options
        )
        model.resting_state(model.values(fixed))
    except ValueError as e:
        raise _err(cfg.path, "model", str(e)) from None
