"""Pipeline configs: what runs, and a clear error for each way a config can be wrong."""

from pathlib import Path

import pytest

from cainfer.pipeline import SCHEMA, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "data_examples"

BASE = f"""
[run]
seed = 3

[inputs]
files = ["{EXAMPLES / "example.tif"}"]

[rois]
source = "{EXAMPLES / "example_rois.tif"}"

[stimulus]
file = "{EXAMPLES / "example_stimulus.csv"}"

[model]
preset = "pumps"
free = ["pmca_vmax", "influx_amplitude"]
"""


def _write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.toml")), ids=lambda p: p.stem)
def test_bundled_pipelines_validate(path):
    cfg = load_config(path)
    assert cfg.recordings and cfg.output.is_absolute()
    assert cfg.cell_model().name == cfg.model["preset"]


def test_defaults_and_relative_paths(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stim.csv").write_text("time_s\n1.0\n2.5\n")
    (tmp_path / "data" / "a.tif").write_bytes(b"")
    cfg = load_config(
        _write(tmp_path, '[inputs]\nfiles = ["data/*.tif"]\n[stimulus]\nfile = "data/stim.csv"\n')
    )
    assert cfg.name == "c" and cfg.output == tmp_path / "runs" / "c"
    assert [r.name for r in cfg.recordings] == ["a"]
    assert cfg.sampler == {k: v[1] for k, v in SCHEMA["sampler"].items()}
    assert cfg.stimulus_for(cfg.recordings[0]).events.tolist() == [1.0, 2.5]
    assert cfg.roi_source_for(cfg.recordings[0]) == "auto"
    assert len(cfg.sha256) == 64


def test_stimulus_protocols(tmp_path):
    stim = f'file = "{EXAMPLES / "example_stimulus.csv"}"'
    text = BASE.replace(stim, "onsets = [1.0, 5.0]\nburst = 2\ninterval = 0.05")
    cfg = load_config(_write(tmp_path, text))
    assert cfg.stimulus_for(cfg.recordings[0]).events == pytest.approx([1.0, 1.05, 5.0, 5.05])
    cfg = load_config(_write(tmp_path, BASE.replace(stim, "events = [2.0, 3.0]")))
    assert cfg.stimulus_for(cfg.recordings[0]).events.tolist() == [2.0, 3.0]


_FURA = '\n[ratiometric]\ndye = "Fura-2"\nr_min = 0.4\nr_max = 7.5\nbeta = 9.0\n'

CASES = [
    # (text to replace, replacement or text to append, error message)
    ("", "\n[extra]\nx = 1\n", r"unknown table\(s\) \['extra'\]"),
    ("seed = 3", "seed = 3\nsede = 4", r"\[run\] unknown key\(s\) \['sede'\]"),
    ("seed = 3", 'seed = "3"', r"\[run\] seed = '3' must be int"),
    ("seed = 3", "seed = true", r"\[run\] seed = True must be int"),
    ('preset = "pumps"', 'preset = "pump"', r"\[model\] preset = 'pump'; allowed"),
    ("", '\n[sampler]\nadaptation = "full"\n', r"\[sampler\] adaptation = 'full'; allowed"),
    ("", "\n[sampler]\ndraws = 0\n", r"\[sampler\] draws = 0 must be ≥ 1"),
    ("", '\n[sampler]\nsubsteps = "fine"\n', r"\[sampler\] substeps = 'fine'; allowed: \"auto\""),
    ("", "\n[sampler]\nsubsteps = 0\n", r"\[sampler\] substeps = 0 must be ≥ 1"),
    ('"influx_amplitude"]', '"influx"]', r"unknown parameter\(s\) \['influx'\]"),
    ("free = [", "fixed = { pmca_vmax = 80.0 }\nfree = [", "both free and fixed"),
    ("example.tif", "missing.tif", r"\[inputs\] files: .*missing.tif' matches no file"),
    ("example_stimulus.csv", "none.csv", r"\[stimulus\] no such file: .*none.csv"),
    ("[stimulus]", "[stimulus]\nevents = [1.0]", "exactly one of file, events, onsets"),
    ("", '\n[extraction]\nbaseline = "median"\n', r"\[extraction\] baseline = 'median'; allowed"),
    ("", "\n[extraction]\nneuropil = 1.5\n", r"neuropil = 1.5 must lie in \[0, 1\)"),
    ("", "\n[parallel]\nworkers = 0\n", r"\[parallel\] workers = 0"),
    ("seed = 3", "seed = 3\n[[x]]", "unknown table"),
    ('preset = "pumps"', 'preset = "pumps"\nindicator = "GCaMP9"', "indicator = 'GCaMP9'"),
    (
        "[model]",
        '[model]\npriors = { pmca_vmax = { kind = "gamma", a = 1 } }',
        r"priors.pmca_vmax.kind = 'gamma'",
    ),
    (
        "[model]",
        '[model]\npriors = { kappa_s = { kind = "lognormal", a = 60, b = 0.5 } }',
        "not free",
    ),
    ("[rois]", '[rois]\nfit = "some"', r"\[rois\] fit = 'some'"),
    ("[model]", '[model]\nindicator_kinetics = "slow"', "indicator_kinetics = 'slow'; allowed"),
    ("[model]", '[model]\nindicator_kinetics = "kinetic"', "needs k_off"),
    ("[model]", "[model]\nk_off = -2.0", "k_off = -2.0 must be a positive rate"),
    ("[model]", "[model]\nswitch_ratio = -1.0", "switch_ratio = -1.0 must be a number ≥ 0"),
    ("[model]", "[model]\nswitch_ratio = 2.0", "switch_ratio needs indicator_kinetics"),
    ("seed = 3", "seed = 3 =", "not valid TOML"),
    ("", '\n[ratiometric]\ndye = "Fura-9"\n', r"\[ratiometric\] dye: unknown ratiometric dye"),
    ("", '\n[ratiometric]\ndye = "Fura-2"\nr_min = 0.4\n', "r_max, beta required with a dye"),
    ("", "\n[ratiometric]\nr_min = 0.4\n", "need a dye"),
    ("", _FURA.replace("r_max = 7.5", "r_max = 0.3"), "r_max = 0.3 must exceed r_min"),
    ("", _FURA + "channels = [1, 1]\n", r"channels = \[1, 1\]: two different"),
    # every value checked before any work starts, with the key named
    ("seed = 3", "seed = -1", r"\[run\] seed = -1 must be ≥ 0"),
    ("seed = 3", 'seed = 3\nname = "../../../x"', r"\[run\] name = '../../../x': a run name"),
    ("seed = 3", 'seed = 3\nname = "a/b"', r"\[run\] name = 'a/b': a run name is one folder"),
    ("seed = 3", 'seed = 3\nname = ".."', r"\[run\] name = '..'"),
    ("[inputs]", "[inputs]\nframe_rate = inf", "frame_rate = inf must be a finite"),
    ("[inputs]", '[inputs]\nseries = "Plane1"', r"\[inputs\] series names an NWB file's .*'tiff'"),
    ("", "\n[extraction]\nneuropil_min_pixels = 0\n", "neuropil_min_pixels = 0 must be a"),
    ("", "\n[extraction]\nneuropil_inner = -1\n", "neuropil_inner = -1 must be a finite"),
    ("", "\n[extraction]\nbaseline_window = inf\n", "baseline_window = inf must be a finite"),
    ("", "\n[extraction]\ndark_level = nan\n", "dark_level = nan must be a finite"),
    ("", "\n[extraction]\nmax_shift = 0\n", r"\[extraction\] max_shift = 0 must be a finite"),
    ("", "\n[extraction]\nmax_shift = inf\n", "max_shift = inf must be a finite"),
    ("[rois]", "[rois]\nfit = [0, 0]", r"\[rois\] fit = \[0, 0\] names ROI\(s\) 0 more than once"),
    ("[rois]", "[rois]\nfit = [true]", r"\[rois\] fit = \[True\]: ROI labels are integers"),
    ("[rois]", "[rois]\nfit = [1.5]", r"ROI labels are integers or names, not 1.5"),
    (
        "[model]",
        '[model]\npriors = { pmca_vmax = { kind = "lognormal" } }',
        r"priors.pmca_vmax: a lognormal prior needs a \(median\)",
    ),
    (
        "[model]",
        '[model]\npriors = { pmca_vmax = { kind = "normal", a = 80 } }',
        r"priors.pmca_vmax: a normal prior needs b \(sd\)",
    ),
    (
        "[model]",
        '[model]\npriors = { pmca_vmax = { kind = "uniform", a = "1", b = 3 } }',
        r"priors.pmca_vmax.a = '1' must be a finite number",
    ),
    (
        "[model]",
        '[model]\npriors = { pmca_vmax = { kind = "uniform", a = 5, b = 3 } }',
        r"priors.pmca_vmax: uniform prior needs lower < upper",
    ),
    (
        "[model]",
        "[model]\npriors = { pmca_vmax = 3 }",
        r"priors.pmca_vmax: expected a table",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), CASES)
def test_bad_configs_name_the_key(tmp_path, old, new, message):
    path = _write(tmp_path, BASE.replace(old, new) if old else BASE + new)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_required_key_and_file(tmp_path):
    with pytest.raises(ConfigError, match=r"\[inputs\] files is required"):
        load_config(_write(tmp_path, "[run]\nseed = 1\n"))
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "nope.toml")


def test_duplicate_recording_names_are_rejected(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "rec.tif").write_bytes(b"")
    text = '[inputs]\nfiles = ["a/rec.tif", "b/rec.tif"]\n[stimulus]\nevents = [1.0]\n'
    with pytest.raises(ConfigError, match=r"recordings with the same name \['rec'\]"):
        load_config(_write(tmp_path, text))


def test_kinetic_indicator_from_the_config(tmp_path):
    text = BASE.replace("[model]", '[model]\nindicator_kinetics = "kinetic"\nk_off = 3.0')
    path = _write(tmp_path, text)
    model = load_config(path).cell_model()
    assert model.kinetic
    assert model.parameters["k_off"].default == 3.0
    assert model.indicator.k_on == pytest.approx(3.0 / model.indicator.kd**model.indicator.hill)
    assert path.name in model.parameters["k_off"].prior.source
    assert "switch_ratio" not in model.parameters
    assert not load_config(_write(tmp_path, BASE)).cell_model().kinetic
    text = text.replace("k_off = 3.0", "k_off = 3.0\nswitch_ratio = 2.0")
    two = load_config(_write(tmp_path, text))
    assert two.cell_model().parameters["switch_ratio"].default == 2.0


def test_ratiometric_config(tmp_path):
    fura = (
        BASE.replace("/example", "/fura_example").replace('"influx_amplitude"', '"c_rest"') + _FURA
    )
    cfg = load_config(_write(tmp_path, fura))
    cal = cfg.calibration()
    assert (cal.r_min, cal.r_max, cal.beta, cal.kd) == (0.4, 7.5, 9.0, 0.224)
    model = cfg.cell_model()
    assert model.indicator.rf == pytest.approx(cal.channel_ranges()[0])
    assert "Fura-2" in model.indicator.name
    assert load_config(_write(tmp_path, BASE, "one.toml")).calibration() is None
    for old, new, message in (
        ("[inputs]", "[inputs]\nchannel = 1", r"\[inputs\] channel is for one-channel fits"),
        ("[model]", '[model]\nobservation = "dff"', r"\[model\] observation = 'dff': a ratio"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(_write(tmp_path, fura.replace(old, new), "bad.toml"))


def test_solver_steps_are_auto_unless_given(tmp_path):
    assert load_config(_write(tmp_path, BASE)).sampler["substeps"] == "auto"
    cfg = load_config(_write(tmp_path, BASE + "\n[sampler]\nsubsteps = 4\n"))
    assert cfg.sampler["substeps"] == 4


@pytest.mark.parametrize(
    ("key", "value"),
    [("neuropil", 1.5), ("dark_level", -5.0), ("baseline_window", 0.0), ("max_shift", 0.0)],
)
def test_config_and_command_line_refuse_an_extraction_value_alike(tmp_path, capsys, key, value):
    from cainfer.cli import main

    path = _write(tmp_path, BASE + f"\n[extraction]\n{key} = {value!r}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    config_rule = str(err.value).split(f"{key} = {value!r} ", 1)[1]
    flag = "--" + key.replace("_", "-")
    argv = ["extract", str(EXAMPLES / "example.tif"), flag, str(value), "--out",
            str(tmp_path / "t.nc"), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    cli_rule = capsys.readouterr().err.strip().split(f"{flag} = {value!r} ", 1)[1]
    assert config_rule == cli_rule and config_rule.startswith("must ")
    assert not (tmp_path / "t.nc").exists()
