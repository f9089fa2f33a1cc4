"""Bad and odd input: one line naming the file, key or flag, and nothing written outside a run.

Each case here was once a traceback, a silent wrong result or a stray file.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from cainfer._files import atomic_path, is_temporary, sweep_temporaries, temporary_name
from cainfer.cli import main
from cainfer.forward import Stimulus
from cainfer.pipeline import RunError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "data_examples"


def _one_line_error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


# ---------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--frame-rate", "inf", "--frame-rate = inf must be a finite number > 0"),
        ("--frame-rate", "nan", "--frame-rate = nan must be a finite number > 0"),
        ("--frame-rate", "1e12", "at most 3,600,000 are simulated"),
        ("--duration", "-1", "--duration = -1.0 must be a finite number > 0"),
    ],
)
def test_simulate_refuses_impossible_lengths(tmp_path, capsys, flag, value, message):
    _one_line_error(capsys, ["simulate", flag, value, "--out", str(tmp_path / "o")], message)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--neuropil", "1.5", "--neuropil = 1.5 must lie in [0, 1)"),
        ("--baseline-window", "0", "--baseline-window = 0.0 must be a finite number > 0"),
        ("--dark-level", "-5", "--dark-level = -5.0 must be a finite number ≥ 0"),
        ("--max-shift", "0", "--max-shift = 0.0 must be a finite number > 0"),
        ("--frame-rate", "inf", "--frame-rate = inf must be a finite number > 0"),
        ("--rois", "/no/such/rois.tif", "--rois /no/such/rois.tif: no such ROI file"),
        ("--rois", str(EXAMPLES / "example_stimulus.csv"), "unknown ROI format '.csv'"),
    ],
)
def test_extract_flags_are_checked_before_the_movie_is_read(tmp_path, capsys, flag, value, message):
    out = tmp_path / "t.nc"
    argv = ["extract", str(EXAMPLES / "example.tif"), flag, value, "--out", str(out),
            "--no-progress"]  # fmt: skip
    _one_line_error(capsys, argv, message)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _traces(path, labels=(1, 2), **drop):
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {"dff": (("roi", "time"), rng.normal(0, 0.05, (len(labels), 60)))},
        coords={"roi": list(labels), "time": np.arange(60) / 30.0},
    )
    for name in drop:
        ds = ds.drop_vars(name)
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_fit_input_is_checked_and_a_failure_writes_nothing(tmp_path, capsys):
    stim = str(EXAMPLES / "example_stimulus.csv")
    out = tmp_path / "fits"

    def fit(traces, *extra):
        return ["fit", str(traces), "--stimulus", stim, "--out", str(out), "--no-progress", *extra]

    no_dff = _traces(tmp_path / "nodff.nc", dff=True)
    _one_line_error(capsys, fit(no_dff), "nodff.nc: no 'dff' variable")
    (tmp_path / "junk.nc").write_bytes(b"not netcdf at all")
    _one_line_error(capsys, fit(tmp_path / "junk.nc"), "junk.nc: not a NetCDF traces file")
    ok = _traces(tmp_path / "ok.nc")
    _one_line_error(capsys, fit(ok, "--roi", "7"), "--roi [7]: not in")
    _one_line_error(capsys, fit(ok, "--roi", "1", "--roi", "1"), "--roi 1 given more than once")
    _one_line_error(capsys, fit(ok, "--draws", "0"), "--draws = 0 must be ≥ 1")
    _one_line_error(capsys, fit(ok, "--series", "Plane1"), "options ['series'] apply to imported")
    crafted = _traces(tmp_path / "crafted.nc", labels=("../../escape", "b"))
    _one_line_error(capsys, fit(crafted), "ROI label '../../escape' cannot be part of a file")
    assert not out.exists()
    assert not (tmp_path.parent / "escape.nc").exists()


def test_an_unforeseen_failure_is_one_line_and_debug_shows_it(tmp_path, capsys, monkeypatch):
    import cainfer.cli as cli

    def broken(args):
        raise KeyError("something")

    monkeypatch.setattr(cli, "_report", broken)
    _one_line_error(capsys, ["report", str(tmp_path)], "KeyError: 'something'")
    with pytest.raises(KeyError):
        main(["--debug", "report", str(tmp_path)])


# ---------------------------------------------------------------- stimulus files


def test_stimulus_csv_from_a_spreadsheet(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("time_s,weight\r\n1.5,2\r\n\r\n3.0,\r\n".encode("utf-8-sig"))
    s = Stimulus.from_csv(p)
    assert s.events.tolist() == [1.5, 3.0] and s.event_weights.tolist() == [2.0, 1.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time_s,weight\n1.0,1\n,2\n", r"short\.csv:3: no time_s value"),
        ("time_s\n1.0\n2.0,5\n", r"short\.csv:3: more values than the header's 1 columns"),
        ("onset\n1.0\n", r"short\.csv: stimulus CSV needs a 'time_s' column"),
        ("time_s\nabc\n", r"short\.csv:2: not a number"),
    ],
)
def test_bad_stimulus_rows_are_named(tmp_path, text, message):
    p = tmp_path / "short.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=message):
        Stimulus.from_csv(p)


def test_a_non_utf8_stimulus_is_named(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("time_s,note\n1.0,\xe9t\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv: not a UTF-8 text file"):
        Stimulus.from_csv(p)


# ---------------------------------------------------------------- run directories


def test_temporary_names_are_recognised_and_swept(tmp_path):
    for name in ("roi_1.png", "roi_1.nc", "summary.csv", "config.toml", "provenance.json"):
        tmp = temporary_name(tmp_path / "sub" / name)
        assert is_temporary(tmp.name) and tmp.suffix == Path(name).suffix
        tmp.parent.mkdir(exist_ok=True)
        tmp.write_text("half")
    (tmp_path / "sub" / "roi_1.nc").write_text("whole")
    (tmp_path / ".hidden_but_mine.txt").write_text("keep")
    gone = sweep_temporaries(tmp_path)
    assert len(gone) == 5
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        ".hidden_but_mine.txt", "roi_1.nc", "sub"]  # fmt: skip


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new, half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_a_second_run_into_the_same_directory_is_refused(tmp_path):
    from cainfer.pipeline.run import _run_lock

    with _run_lock(tmp_path / "run"):
        with (
            pytest.raises(RunError, match="in use by another cainfer run"),
            _run_lock(tmp_path / "run"),
        ):
            pass
    with _run_lock(tmp_path / "run"):  # released
        pass


def test_damaged_provenance_is_named(tmp_path):
    from cainfer.pipeline.run import _read_provenance

    p = tmp_path / "provenance.json"
    for text, message in (
        ("[1, 2]", "not a run's provenance record"),
        ('{"inputs": 3}', "inputs is a int, not a dict"),
        ('{"config_sha256": ', "cannot be read as a run's provenance"),
    ):
        p.write_text(text)
        with pytest.raises(RunError, match=message):
            _read_provenance(p)


def test_a_junk_summary_is_not_reported_as_passing(tmp_path):
    from cainfer.pipeline import write_report

    (tmp_path / "provenance.json").write_text(json.dumps({"started": "x", "finished": "y"}))
    for text, message in (
        ("a,b\n1,2\n", r"summary\.csv: not a run summary \(no column recording, roi, ok\)"),
        ("recording,roi,ok\n", r"summary\.csv: holds no fits"),
        ("recording,roi,ok\nx,1,maybe\n", r"summary\.csv:2: not a row of a run summary"),
    ):
        (tmp_path / "summary.csv").write_text(text)
        with pytest.raises(ValueError, match=message):
            write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


# ---------------------------------------------------------------- extraction and fits


def test_a_movie_with_nan_pixels_is_named_before_registration(tmp_path):
    import tifffile

    from cainfer.extract import extract_traces

    frames = np.random.default_rng(0).random((20, 16, 16)).astype(np.float32) * 100
    frames[7, 3, 3] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, frames)
    masks = np.zeros((1, 16, 16), bool)
    masks[0, 5:9, 5:9] = True
    with pytest.raises(ValueError, match=r"nan\.tif: frame 7 holds NaN or infinite pixels"):
        extract_traces(path, rois=masks, frame_rate=10.0, neuropil_min_pixels=10)


def test_fit_arguments_are_checked_by_name():
    from cainfer.forward import preset
    from cainfer.infer.fit import _validated

    model = preset("pumps")
    from cainfer._options import FIT_DEFAULTS

    opts = {**FIT_DEFAULTS, "draws": 10, "tune": 10, "chains": 1}
    for free, fixed, message in (
        ("pmca_vmax", None, r"free = 'pmca_vmax': give a list"),
        ([0, ""], None, "free: parameter names are strings, not 0"),
        (["pmca_vmax", "pmca_vmax"], None, r"named more than once"),
        (["pmca_vmax"], {"kappa_s": float("nan")}, "fixed: kappa_s = nan is not a finite"),
        (["pmca_vmax"], {"kappa_s": "80"}, "fixed: kappa_s = '80' is not a finite"),
    ):
        with pytest.raises(ValueError, match=message):
            _validated(model, free, fixed, None, opts)


@pytest.mark.parametrize(
    ("traces", "time", "kw", "message"),
    [
        (np.where(np.arange(60) == 5, np.inf, 0.0), None, {}, "infinite at frame 5"),
        (np.zeros(1), np.zeros(1), {}, r"has 1 frame\(s\); a fit needs ≥ 2"),
        ("abc", None, {}, "traces: not an array of numbers"),
        (np.zeros(60), None, {"seed": -1}, "seed = -1 must be an integer ≥ 0"),
        (np.zeros(60), None, {"seed": "a"}, "seed = 'a' must be an integer ≥ 0"),
        (np.zeros(60), None, {"cores": 0}, r"cores = 0 must be None \(all\) or an integer ≥ 1"),
    ],
)
def test_fit_refuses_bad_arguments_before_any_work(traces, time, kw, message):
    import cainfer
    from cainfer.forward import preset

    t = np.arange(60) / 30.0 if time is None else time
    with pytest.raises(ValueError, match=message):
        cainfer.fit(traces, preset("pumps"), stimulus=None, time=t, free=["pmca_vmax"], **kw)


def test_a_damaged_result_is_set_aside_and_redone_on_resume(tmp_path):
    from cainfer.pipeline.run import _readable

    good = _traces(tmp_path / "good.nc")
    assert _readable(good, "traces")
    raw = good.read_bytes()
    bad = tmp_path / "bad.nc"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.warns(UserWarning, match=r"bad\.nc: the saved traces cannot be read; kept as"):
        assert not _readable(bad, "traces")
    assert not bad.exists() and (tmp_path / "bad.nc.damaged").read_bytes() == raw[: len(raw) // 2]
    # a NetCDF file that is not a fit is not taken for one
    with pytest.warns(UserWarning, match="the saved fit cannot be read"):
        assert not _readable(good, "fit")
    assert not _readable(tmp_path / "missing.nc", "fit")


def test_a_run_that_failed_before_any_result_takes_the_corrected_config(tmp_path):
    from cainfer.pipeline import load_config
    from cainfer.pipeline.run import _start_provenance

    rec = tmp_path / "rec.tif"
    import tifffile

    tifffile.imwrite(rec, np.zeros((5, 8, 8), np.uint16), photometric="minisblack")
    text = f'[inputs]\nfiles = ["{rec}"]\n[stimulus]\nevents = [0.1]\n[run]\nseed = 1\n'
    (tmp_path / "a.toml").write_text(text)
    (tmp_path / "b.toml").write_text(text.replace("seed = 1", "seed = 2"))
    out = tmp_path / "run"
    _start_provenance(load_config(tmp_path / "a.toml"), out, out / "provenance.json")
    # nothing extracted or fitted yet: the corrected config takes the directory
    prov = _start_provenance(load_config(tmp_path / "b.toml"), out, out / "provenance.json")
    assert prov["config_sha256"] == load_config(tmp_path / "b.toml").sha256
    (out / "traces").mkdir()
    (out / "traces" / "rec.nc").write_bytes(b"x")
    with pytest.raises(RunError, match="holds a run of another config"):
        _start_provenance(load_config(tmp_path / "a.toml"), out, out / "provenance.json")


def test_roi_labels_cannot_lead_out_of_the_run(tmp_path):
    from cainfer.pipeline.run import _fit_paths

    post, fig = _fit_paths(tmp_path, "rec", 3)
    assert post == tmp_path / "posteriors" / "rec" / "roi_3.nc"
    assert fig == tmp_path / "figures" / "rec" / "roi_3.png"
    for label in ("../../x", "a/b", "..", "", "x\ny"):
        with pytest.raises(RunError, match="cannot be part of a file name"):
            _fit_paths(tmp_path, "rec", label)


def test_a_config_that_is_not_utf8_is_named(tmp_path):
    from cainfer.pipeline import ConfigError, load_config

    p = tmp_path / "latin.toml"
    p.write_bytes('[run]\nname = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.toml: not a UTF-8 text file"):
        load_config(p)
