"""Pipeline runs on the bundled example: outputs, provenance, reproducibility, kill -9 and resume,
Dask workers, and the CLI."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from cainfer.cli import main
from cainfer.infer import load_fit
from cainfer.pipeline import RunError, load_config, run_pipeline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "data_examples"

CONFIG = f"""
[run]
seed = 7

[inputs]
files = ["{EXAMPLES / "example.tif"}"]

[extraction]
dark_level = 100.0
baseline_window = 20.0
max_shift = 12.0

[rois]
source = "{EXAMPLES / "example_rois.tif"}"
fit = [1, 4]

[stimulus]
file = "{EXAMPLES / "example_stimulus.csv"}"

[model]
preset = "pumps"
free = ["pmca_vmax", "influx_amplitude"]

[sampler]
draws = 150
tune = 150
chains = 2
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "small.toml"
    path.write_text(CONFIG)
    return path


# what a fit of raw fluorescence reports besides the free parameters
OBSERVED = ("sigma", "F0", "dff_gain", "neuropil_ratio", "noise_exponent", "rho")


def _summary_table(html: str) -> list[dict[str, str]]:
    """The rows of a report's posterior summary table, by column."""
    table = html.split("<h2>Posterior summary</h2>", 1)[1].split("</table>", 1)[0]
    head = re.findall(r"<th>(.*?)</th>", table)
    return [dict(zip(head, re.findall(r"<td>(.*?)</td>", tr), strict=True))
            for tr in re.findall(r"<tr>(<td>.*?)</tr>", table)]  # fmt: skip


@pytest.fixture(scope="module")
def serial_run(config, tmp_path_factory):
    return run_pipeline(config, output=tmp_path_factory.mktemp("runs") / "a", workers=1,
                        progress=False)  # fmt: skip


@pytest.mark.slow
def test_run_directory_holds_every_output(serial_run, config):
    out = serial_run
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # 2 ROIs x (2 free parameters + the fluorescence observation's)
    assert [(r["roi"], r["parameter"]) for r in rows] == [
        (roi, p) for roi in ("1", "4") for p in ("pmca_vmax", "influx_amplitude", *OBSERVED)
    ]
    truth = xr.open_dataset(EXAMPLES / "example_truth.nc", engine="h5netcdf")
    for r in rows:
        assert float(r["hdi94_lb"]) <= float(r["mean"]) <= float(r["hdi94_ub"])
        assert r["ok"] in ("true", "false")
        if r["parameter"] == "influx_amplitude":  # the cells' true amplitudes
            true = float(truth["influx_amplitude"][int(r["roi"])])
            assert abs(float(r["mean"]) / true - 1) < 0.3
    fit = load_fit(out / "posteriors" / "example" / "roi_4.nc")
    assert fit.free == ["pmca_vmax", "influx_amplitude"]
    assert fit.settings["draws"] == 150 and fit.settings["roi"] == 4
    assert (out / "figures" / "example" / "roi_1.png").stat().st_size > 10_000
    tree = xr.open_datatree(out / "traces.nc", engine="h5netcdf")
    assert tree["example"]["dff"].shape == (8, 900)
    assert json.loads(tree["example"].attrs["registration"])["max_shift_px"] == 12.0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"] == config.read_text()
    assert prov["config_sha256"] == load_config(config).sha256
    assert set(prov["inputs"]) == {
        str(EXAMPLES / n) for n in ("example.tif", "example_rois.tif", "example_stimulus.csv")
    }
    assert prov["versions"]["pymc"] and prov["versions"]["cainfer"]
    assert set(prov["roi_seeds"]) == {"example/1", "example/4"}
    assert prov["started"] <= prov["finished"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "pmca_vmax" in html and "kappa_s" in html
    # the example is simulated: each free parameter's truth, z and whether it is inside
    cells = _summary_table(html)
    by_key = {(r["roi"], r["parameter"]): r for r in rows}
    scored = [c for c in cells if c["truth"]]
    assert sorted((c["roi"], c["parameter"]) for c in scored) == sorted(
        (roi, p) for roi in ("1", "4") for p in ("pmca_vmax", "influx_amplitude")
    )
    for c in scored:
        r = by_key[(c["roi"], c["parameter"])]
        true = (
            100.0
            if c["parameter"] == "pmca_vmax"
            else float(truth["influx_amplitude"][int(c["roi"])])
        )
        assert float(c["truth"]) == pytest.approx(true, rel=1e-3)
        z = (float(r["mean"]) - true) / float(r["sd"])
        assert float(c["z"]) == pytest.approx(z, abs=0.006)
        inside = float(r["hdi94_lb"]) <= true <= float(r["hdi94_ub"])
        assert c["truth in 94% HDI"] == ("yes" if inside else "NO")
    n_in = sum(c["truth in 94% HDI"] == "yes" for c in scored)
    assert f"<b>{n_in} of 4</b> true values lie inside" in html
    assert "all are in about 78 % of recordings" in html  # 0.94**4
    from cainfer._files import is_temporary

    assert not [p for p in out.rglob(".*") if is_temporary(p.name)]


@pytest.mark.slow
def test_the_summary_a_run_keeps_is_that_of_its_saved_posteriors(serial_run, config, tmp_path):
    """The run summarises the fits it made from memory: the same bytes as from their files."""
    from cainfer.pipeline.run import summary_rows, write_summary

    cfg = load_config(config)
    tree = xr.open_datatree(serial_run / "traces.nc")
    traces = {name: tree[name].to_dataset() for name in tree.children}
    write_summary(tmp_path / "summary.csv", summary_rows(serial_run, cfg, traces))
    assert (tmp_path / "summary.csv").read_bytes() == (serial_run / "summary.csv").read_bytes()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_outputs(serial_run, config, tmp_path):
    """kill -9 after the first ROI's posterior is written; the rerun redoes only the rest."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cainfer.cli", "run", str(config), "--out", str(out),
           "--workers", "1", "--no-progress"]  # fmt: skip
    first = out / "posteriors" / "example" / "roi_1.nc"
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 600
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "summary.csv").exists()
    assert not (out / "posteriors" / "example" / "roi_4.nc").exists()
    before = first.stat().st_mtime_ns
    run_pipeline(config, output=out, workers=1, progress=False)
    assert first.stat().st_mtime_ns == before  # finished work was not redone
    assert (out / "summary.csv").read_bytes() == (serial_run / "summary.csv").read_bytes()
    prov = json.loads((out / "provenance.json").read_text())
    assert len(prov["sessions"]) == 2
    from cainfer._files import is_temporary

    assert not [p for p in out.rglob(".*") if is_temporary(p.name)]


@pytest.mark.slow
def test_dask_workers_give_the_serial_numbers(serial_run, config, tmp_path):
    out = run_pipeline(config, output=tmp_path / "dask", workers=2, progress=False)
    assert (out / "summary.csv").read_bytes() == (serial_run / "summary.csv").read_bytes()


@pytest.mark.slow
def test_cli_run_report_and_errors(serial_run, config, tmp_path, capsys):
    # a finished run: nothing is redone, the report is rewritten
    assert main(["run", str(config), "--out", str(serial_run), "--no-progress"]) == 0
    assert f"report: {serial_run / 'report.html'}" in capsys.readouterr().out
    (serial_run / "report.html").unlink()
    assert main(["report", str(serial_run)]) == 0
    assert (serial_run / "report.html").is_file()
    # another config into the same directory is refused
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.replace("seed = 7", "seed = 8"))
    assert main(["run", str(other), "--out", str(serial_run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds a run of another config" in err and err.count("\n") == 1
    with pytest.raises(RunError, match="another config"):
        run_pipeline(other, output=serial_run, workers=1, progress=False)
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read the config" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "is this a finished cainfer run" in capsys.readouterr().err


def test_roi_seeds_are_distinct_and_stable():
    from cainfer.pipeline import roi_seed

    seeds = {roi_seed(7, r, i) for r in range(3) for i in range(50)}
    assert len(seeds) == 150
    assert roi_seed(7, 0, 1) == roi_seed(7, 0, 1) != roi_seed(8, 0, 1)
    assert all(0 <= s < 2**31 for s in seeds)


def test_fit_rois_must_exist(config, tmp_path):
    cfg_path = tmp_path / "bad.toml"
    cfg_path.write_text(CONFIG.replace("fit = [1, 4]", "fit = [1, 40]"))
    from cainfer.pipeline import ConfigError

    with pytest.raises(ConfigError, match=r"ROI\(s\) \[40\] not in recording 'example'"):
        run_pipeline(cfg_path, output=tmp_path / "r", workers=1, progress=False)


@pytest.mark.slow
def test_cli_extract_then_fit(tmp_path, capsys):
    traces = tmp_path / "traces.nc"
    args = ["extract", str(EXAMPLES / "example.tif"), "--rois", str(EXAMPLES / "example_rois.tif"),
            "--baseline-window", "20", "--out", str(traces), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == f"wrote {traces} (8 ROIs)"
    ds = xr.open_dataset(traces, engine="h5netcdf")
    assert ds["dff"].shape == (8, 900) and float(ds.attrs["frame_rate"]) == 30.0
    out = tmp_path / "fits"
    args = ["fit", str(traces), "--stimulus", str(EXAMPLES / "example_stimulus.csv"),
            "--free", "pmca_vmax,influx_amplitude", "--roi", "2", "--draws", "150",
            "--tune", "150", "--chains", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("recording,roi,parameter,mean,sd,hdi94_lb,hdi94_ub")
    assert [r.split(",")[:3] for r in rows[1:]] == [
        ["traces", "2", p] for p in ("pmca_vmax", "influx_amplitude", *OBSERVED)
    ]
    assert load_fit(out / "roi_2.nc").free == ["pmca_vmax", "influx_amplitude"]
    assert (out / "roi_2.png").is_file()
    # bad input: one line, exit status 2
    capsys.readouterr()
    assert main(["fit", str(traces), "--stimulus", str(EXAMPLES / "example_stimulus.csv"),
                 "--roi", "12", "--out", str(out)]) == 2  # fmt: skip
    assert "--roi [12]: not in" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "none.tif"), "--out", str(traces)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# stand-ins for SLURM's commands on a machine without it: sbatch runs the job script as
# a process group of its own (as a node would), scancel ends that group
SBATCH = """#!/usr/bin/env bash
id=$$  # the process id: unique among concurrent submissions
cp "$1" "$FAKE_SLURM/$id.sh" || exit 1
setsid bash "$FAKE_SLURM/$id.sh" > "$FAKE_SLURM/$id.log" 2>&1 < /dev/null &
echo $! > "$FAKE_SLURM/$id.pid"
echo "Submitted batch job $id"
"""
SCANCEL = """#!/usr/bin/env bash
kill -TERM -- -"$(cat "$FAKE_SLURM/$1.pid")" 2>/dev/null || true
"""


@pytest.mark.slow
def test_a_run_on_slurm_workers_gives_the_serial_numbers(serial_run, config, tmp_path,
                                                         monkeypatch):  # fmt: skip
    """The README's HPC recipe: dask-jobqueue submits worker jobs, the run goes to its scheduler.

    Two jobs (two worker processes, as on two nodes) split the two ROIs; the
    summary is byte for byte the serial run's.
    """
    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    bin_dir, jobs = tmp_path / "bin", tmp_path / "jobs"
    bin_dir.mkdir()
    jobs.mkdir()
    for name, text in (("sbatch", SBATCH), ("scancel", SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(jobs))
    with SLURMCluster(cores=1, processes=1, memory="4GB", walltime="00:30:00",
                      scheduler_options={"dashboard_address": None},
                      local_directory=str(tmp_path / "dask")) as cluster:  # fmt: skip
        assert "#SBATCH -t 00:30:00" in cluster.job_script()
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            address = cluster.scheduler_address
            out = run_pipeline(config, output=tmp_path / "slurm", scheduler=address,
                               progress=False)  # fmt: skip
            hosts = {w["name"] for w in client.scheduler_info()["workers"].values()}
    assert len(hosts) == 2 and len(list(jobs.glob("*.sh"))) == 2
    assert (out / "summary.csv").read_bytes() == (serial_run / "summary.csv").read_bytes()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["sessions"][-1]["scheduler"] == cluster.scheduler_address


@pytest.mark.slow
def test_ratiometric_run(tmp_path):
    text = (ROOT / "pipelines" / "fura.toml").read_text()
    text = text.replace("../data_examples", str(EXAMPLES))
    text = text.replace("[rois]\n", "[rois]\nfit = [1]\n").replace("draws = 500", "draws = 150")
    text = text.replace("tune = 500", "tune = 150")
    text = text.replace("dark_level = 100.0\n", "dark_level = 100.0\nmax_shift = 6.5\n")
    path = tmp_path / "fura.toml"
    path.write_text(text)
    out = run_pipeline(path, output=tmp_path / "run", workers=1, progress=False)
    with open(out / "summary.csv", newline="") as fh:
        rows = {r["parameter"]: r for r in csv.DictReader(fh)}
    assert {"pmca_vmax", "influx_amplitude", "c_rest", "R_min", "R_max", "beta",
            "background_ratio", "sigma_den"} <= set(rows)  # fmt: skip
    c_rest = float(rows["c_rest"]["mean"])
    assert 0.05 < c_rest < 0.12  # the example's cells rest at 0.08 µM
    tree = xr.open_datatree(out / "traces.nc", engine="h5netcdf")
    assert tree["fura_example"]["F"].shape == (3, 2, 450)
    assert tree["fura_example"]["ratio"].shape == (3, 450)
    numerator = json.loads(tree["fura_example"].attrs["numerator"])
    assert json.loads(numerator["registration"])["max_shift_px"] == 6.5
    fit = load_fit(out / "posteriors" / "fura_example" / "roi_1.nc")
    assert fit.settings["observation"] == "ratio"
    assert (out / "figures" / "fura_example" / "roi_1.png").stat().st_size > 10_000
    # the movie is simulated: the report scores the free parameters and the calibration
    truth = xr.open_dataset(EXAMPLES / "fura_example_truth.nc", engine="h5netcdf")
    cal = json.loads(truth.attrs["calibration"])
    cell = json.loads(truth.attrs["parameters"])[1]
    expected = {"pmca_vmax": cell["pmca_vmax"], "c_rest": cell["c_rest"],
                "influx_amplitude": float(truth["influx_amplitude"][1]),
                "R_min": cal["r_min"], "R_max": cal["r_max"], "beta": cal["beta"]}  # fmt: skip
    html = (out / "report.html").read_text()
    cells = _summary_table(html)
    scored = {c["parameter"]: c for c in cells if c["truth"]}
    assert set(scored) == set(expected)
    for name, value in expected.items():
        assert float(scored[name]["truth"]) == pytest.approx(value, rel=1e-3), name
        r = rows[name]
        inside = float(r["hdi94_lb"]) <= value <= float(r["hdi94_ub"])
        assert scored[name]["truth in 94% HDI"] == ("yes" if inside else "NO"), name


def test_a_new_part_of_a_folder_recording_stops_a_resume(tmp_path, rng):
    """The fingerprint covers every file the reader opens (here a BigTIFF ``.btf`` part)."""
    import numpy as np
    import tifffile

    from cainfer.pipeline.run import _start_provenance

    rec = tmp_path / "rec"
    rec.mkdir()
    frames = rng.integers(0, 1000, (20, 16, 16)).astype(np.uint16)
    tifffile.imwrite(rec / "part1.tif", frames[:10])
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(
        f'[inputs]\nfiles = ["{rec}"]\nframe_rate = 10.0\n[model]\npreset = "pumps"\n'
        'free = ["pmca_vmax"]\n[stimulus]\nevents = [0.5]\n'
    )
    cfg = load_config(cfg_path)
    out = tmp_path / "run"
    prov = _start_provenance(cfg, out, out / "provenance.json")
    assert list(prov["inputs"]) == [str(rec / "part1.tif")]
    tifffile.imwrite(rec / "part2.btf", frames[10:], bigtiff=True)
    with pytest.raises(RunError, match=r"input files changed.*part2\.btf"):
        _start_provenance(cfg, out, out / "provenance.json")


def test_a_suite2p_plane_runs_as_the_movie_it_was_extracted_from(serial_run, tmp_path):
    """The example's traces written as a Suite2p plane: the same fits as from the movie."""
    from tests.extract.test_imported import write_suite2p

    ex = xr.open_datatree(serial_run / "traces.nc", engine="h5netcdf")["example"].to_dataset()
    plane = tmp_path / "session" / "suite2p" / "plane0"
    write_suite2p(plane, ex.F.values, ex.F_neu.values, ex.masks.values.astype(bool),
                  fs=float(ex.attrs["frame_rate"]))  # fmt: skip
    text = CONFIG.replace(f'files = ["{EXAMPLES / "example.tif"}"]',
                          'files = ["session/suite2p/plane0"]\nformat = "suite2p"')  # fmt: skip
    text = text.replace(f'source = "{EXAMPLES / "example_rois.tif"}"\n', "")
    text = text.replace("dark_level = 100.0\n", "").replace("max_shift = 12.0\n", "")
    text = text.replace("fit = [1, 4]", "fit = [4]")  # one of the movie run's ROIs is enough
    path = tmp_path / "s2p.toml"
    path.write_text(text)
    out = run_pipeline(path, output=tmp_path / "run", workers=1, progress=False)
    name = "session_suite2p_plane0"
    prov = json.loads((out / "provenance.json").read_text())
    assert set(prov["inputs"]) == {str(plane / f) for f in
                                   ("F.npy", "Fneu.npy", "iscell.npy", "stat.npy", "ops.npy")} | {
        str(EXAMPLES / "example_stimulus.csv")}  # fmt: skip
    tree = xr.open_datatree(out / "traces.nc", engine="h5netcdf")
    assert tree[name].attrs["source_format"] == "suite2p"

    def means(run, rec):
        with open(run / "summary.csv", newline="") as fh:
            return {(r["roi"], r["parameter"]): (float(r["mean"]), float(r["sd"]))
                    for r in csv.DictReader(fh) if r["recording"] == rec}  # fmt: skip

    theirs, ours = means(out, name), means(serial_run, "example")
    ours = {k: v for k, v in ours.items() if k[0] == "4"}
    assert set(theirs) == set(ours)
    for key, (m, sd) in ours.items():  # float32 traces, another chain: Monte Carlo error only
        assert abs(theirs[key][0] - m) < 0.35 * sd, (key, theirs[key], m, sd)
    bad = path.read_text().replace('format = "suite2p"', 'format = "suite2p"\nchannel = 1')
    path.write_text(bad)
    with pytest.raises(Exception, match=r"\[inputs\] channel: suite2p input brings its own ROIs"):
        load_config(path)


def test_a_run_exported_to_nwb_passes_nwbinspector_and_runs_again_from_it(
    serial_run, tmp_path, capsys
):
    """``cainfer nwb``: traces, stimulus and summaries; the file as input gives the same fits."""
    pynwb = pytest.importorskip("pynwb")
    from nwbinspector import Importance, inspect_nwbfile

    from cainfer.extract import load_traces
    from cainfer.forward import Stimulus

    args = ["nwb", str(serial_run), "--out", str(tmp_path / "nwb"), "--subject-id", "m1",
            "--species", "Mus musculus", "--sex", "F", "--age", "P90D"]  # fmt: skip
    assert main(args) == 0
    path = tmp_path / "nwb" / "example.nwb"
    assert capsys.readouterr().out.strip() == f"wrote {path}"
    assert not [m for m in inspect_nwbfile(nwbfile_path=str(path))
                if m.importance == Importance.CRITICAL]  # fmt: skip
    ex = xr.open_datatree(serial_run / "traces.nc", engine="h5netcdf")["example"].to_dataset()
    back = load_traces(path, baseline_window=20.0)
    assert back.F.values.tolist() == ex.F.values.tolist()
    with open(serial_run / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        table = nwb.processing["misc"]["posterior_summaries"].to_dataframe()
        assert table["mean"].tolist() == [float(r["mean"]) for r in rows]
        events = Stimulus.from_csv(EXAMPLES / "example_stimulus.csv").events
        assert nwb.stimulus["stimulus_events"].timestamps[:].tolist() == events.tolist()
    text = CONFIG.replace(f'files = ["{EXAMPLES / "example.tif"}"]',
                          f'files = ["{path}"]\nformat = "nwb"')  # fmt: skip
    text = text.replace(f'source = "{EXAMPLES / "example_rois.tif"}"\n', "")
    text = text.replace("dark_level = 100.0\n", "").replace("max_shift = 12.0\n", "")
    text = text.replace("fit = [1, 4]", "fit = [4]")  # one of the movie run's ROIs is enough
    (tmp_path / "nwb.toml").write_text(text)
    out = run_pipeline(tmp_path / "nwb.toml", output=tmp_path / "run", workers=1, progress=False)
    with open(out / "summary.csv", newline="") as fh:
        again = list(csv.DictReader(fh))
    rows = [r for r in rows if r["roi"] == "4"]
    assert [(r["roi"], r["parameter"]) for r in again] == [(r["roi"], r["parameter"]) for r in rows]
    for a, b in zip(again, rows, strict=True):  # the same traces: Monte Carlo error only
        assert abs(float(a["mean"]) - float(b["mean"])) < 0.35 * float(b["sd"]), (a, b)
