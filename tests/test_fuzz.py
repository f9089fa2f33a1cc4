"""Generated inputs for the readers, the config and the command line: a clean error or a
correct result, never a traceback.

"Clean" means the exception the function documents (``MovieError``/``ValueError``,
``ConfigError``, exit status 2 with one line), with the file named in its message. The
number of generated cases per test is its ``max_examples``; the README gives the total.
"""

import io
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cainfer.cli import main
from cainfer.forward import Stimulus
from cainfer.io import MovieError, load_movie, read_rois
from cainfer.pipeline import SCHEMA, ConfigError, load_config
from tests.pipeline.test_config import BASE as CONFIG_BASE

ROOT = Path(__file__).resolve().parents[1]
# derandomize: the same cases on every run and machine (seeded, as every test here)
SETTINGS = dict(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# ---------------------------------------------------------------- TIFF movies

LAYOUT = st.tuples(
    st.lists(st.sampled_from("TZCQI"), min_size=1, max_size=3),  # leading axes
    st.lists(st.integers(1, 5), min_size=3, max_size=3),  # their lengths
    st.sampled_from(["uint8", "uint16", "int16", "float32"]),
    st.sampled_from([None, "zlib"]),
    st.booleans(),  # name the axes in the metadata
)


def _time_frames(axes: str, shape: tuple[int, ...]) -> int | None:
    """Frames a reader must deliver for this layout, or None if it must refuse it."""
    lead = [(a, n) for a, n in zip(axes, shape, strict=False)]
    if sum(a == "C" for a, _ in lead) > 1:
        return None
    long = [n for a, n in lead if a != "C" and n > 1]
    if len(long) > 1:
        return None
    return long[0] if long else 1


@settings(max_examples=300, **SETTINGS)
@given(layout=LAYOUT, cut=st.one_of(st.none(), st.floats(0.05, 0.999)))
def test_tiff_layouts_load_every_frame_or_refuse(tmp_path_factory, layout, cut):
    axes_list, lengths, dtype, compression, named = layout
    axes = "".join(axes_list)
    shape = tuple(lengths[: len(axes)])
    rng = np.random.default_rng(0)
    data = (rng.random((*shape, 6, 5)) * 100).astype(dtype)
    path = tmp_path_factory.mktemp("tif") / "m.tif"
    md = {"axes": axes + "YX"} if named else None
    try:
        tifffile.imwrite(path, data, metadata=md, compression=compression, photometric="minisblack")
    except (ValueError, TypeError):
        assume(False)  # a layout tifffile itself will not write
    if cut is not None:
        raw = path.read_bytes()
        path.write_bytes(raw[: max(8, int(len(raw) * cut))])
    seen = None
    if cut is None:
        with tifffile.TiffFile(path) as tf:  # what the file holds, as tifffile reads it
            series = tf.series[0]
            seen = (series.axes[:-2], tuple(series.shape[:-2]))
    n_ch = 1
    if seen is not None:
        n_ch = dict(zip(*seen, strict=True)).get("C", 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mv = load_movie(path, frame_rate=10.0, channel=0 if n_ch > 1 else None)
            frames = mv.read(0, len(mv))
            mv.close()
    except MovieError as e:
        assert str(path) in str(e)
        if seen is not None:  # an intact file is refused only for a layout it cannot read
            expected = _time_frames(*seen)
            assert expected is None or expected < 2, (seen, str(e))
        return
    assert cut is None or frames.size  # a truncated file read whole: its data must be there
    if seen is not None:
        expected = _time_frames(*seen)
        assert expected is not None and len(frames) == expected >= 2
        full = np.asarray(tifffile.imread(path)).reshape(-1, 6, 5) if n_ch == 1 else None
        if full is not None:
            np.testing.assert_array_equal(frames, full.astype(frames.dtype))


# ---------------------------------------------------------------- stimulus CSV

CSV_TEXT = st.lists(
    st.sampled_from(
        [*'0123456789.,-e \n\r\t"', "time_s", "weight", "nan", "inf", "\ufeff", "é", "x"]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=500, **SETTINGS)
@given(text=CSV_TEXT, encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
def test_stimulus_csv_reads_or_names_the_file(tmp_path_factory, text, encoding):
    path = tmp_path_factory.mktemp("csv") / "stim.csv"
    try:
        path.write_bytes(text.encode(encoding))
    except UnicodeEncodeError:
        assume(False)
    try:
        s = Stimulus.from_csv(path)
    except ValueError as e:
        assert str(path) in str(e)
        return
    assert np.all(np.isfinite(s.events)) and np.all(s.event_weights >= 0)
    assert len(s.events) == len(s.event_weights)


# ---------------------------------------------------------------- ROI files


@settings(max_examples=300, **SETTINGS)
@given(
    suffix=st.sampled_from([".npy", ".tif", ".zip", ".roi"]),
    payload=st.one_of(
        st.binary(max_size=200),
        st.tuples(
            st.sampled_from(["bool", "uint8", "int32", "float64", "complex64"]),
            st.lists(st.integers(0, 4), min_size=1, max_size=4),
            st.integers(0, 3),
        ),
    ),
    cut=st.one_of(st.none(), st.floats(0.1, 0.99)),
)
def test_roi_files_read_or_name_the_file(tmp_path_factory, suffix, payload, cut):
    path = tmp_path_factory.mktemp("roi") / f"r{suffix}"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        dtype, shape, seed = payload
        a = (np.random.default_rng(seed).random(shape) * 3).astype(dtype)
        buf = io.BytesIO()
        if suffix == ".tif":
            try:
                tifffile.imwrite(buf, a, photometric="minisblack")
            except Exception:
                assume(False)
        else:
            np.save(buf, a)
        raw = buf.getvalue()
        path.write_bytes(raw if cut is None else raw[: int(len(raw) * cut)])
    try:
        m = read_rois(path, shape=(4, 4) if suffix in (".zip", ".roi") else None)
    except ValueError as e:
        assert str(path) in str(e)
        return
    assert m.dtype == bool and m.ndim == 3 and m.shape[0] >= 1 and m.any(axis=(1, 2)).all()


# ---------------------------------------------------------------- configs

# the config every generated one starts from: the config tests' valid base
BASE = CONFIG_BASE

# a value of any TOML type, odd numbers and hostile strings included
VALUE = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(
        [
            "",
            "..",
            "../../x",
            "a/b",
            "auto",
            "all",
            "{name}",
            "é",
            "\x01",
            "pumps",
            "OGB-1",
            "smooth",
            "per_buffer",
        ]
    ),
    st.lists(st.one_of(st.integers(-3, 10), st.booleans(), st.text(max_size=3)), max_size=3),
)
KEYS = [(t, k) for t, keys in SCHEMA.items() for k in keys if (t, k) != ("inputs", "files")]


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\x01", "\\u0001") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


@settings(max_examples=600, **SETTINGS)
@given(changes=st.lists(st.tuples(st.sampled_from(KEYS), VALUE), min_size=1, max_size=3))
def test_configs_load_or_name_the_file_and_key(tmp_path_factory, changes):
    tables: dict[str, dict[str, str]] = {}
    for (table, key), value in changes:
        tables.setdefault(table, {})[key] = _toml(value)
    lines = []
    for block in BASE.strip().split("\n\n"):
        head, *rest = block.splitlines()
        name = head.strip("[]")
        own = tables.pop(name, {})
        rest = [r for r in rest if r.split(" = ")[0] not in own]
        lines += [head, *rest, *(f"{k} = {v}" for k, v in own.items()), ""]
    for name, own in tables.items():
        lines += [f"[{name}]", *(f"{k} = {v}" for k, v in own.items()), ""]
    folder = tmp_path_factory.mktemp("cfg")
    path = folder / "c.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        cfg = load_config(path)
    except ConfigError as e:
        assert str(path) in str(e)
        return
    # what loaded is what a run can use: the output stays under the config's folder
    # unless the config says otherwise, and values are in range
    assert cfg.name and "/" not in cfg.name and not cfg.name.startswith(".")
    assert cfg.seed >= 0
    fr = cfg.frame_rate
    assert fr is None or (math.isfinite(fr) and fr > 0)
    assert cfg.roi_fit == "all" or len(set(cfg.roi_fit)) == len(cfg.roi_fit)


@settings(max_examples=200, **SETTINGS)
@given(raw=st.binary(max_size=120))
def test_config_bytes_load_or_name_the_file(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("cfgb") / "b.toml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError as e:
        assert str(path) in str(e)


# ---------------------------------------------------------------- command line

NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["abc", "", "1e400", "-0", "0x10"]),
)


@settings(max_examples=300, **SETTINGS)
@given(
    command=st.sampled_from(["extract", "simulate"]),
    flag=st.sampled_from(
        [
            "--frame-rate",
            "--neuropil",
            "--dark-level",
            "--baseline-window",
            "--duration",
            "--channel",
        ]
    ),
    value=NUMBER,
)
def test_cli_flags_exit_2_with_one_line(tmp_path_factory, capsys, command, flag, value):
    out = tmp_path_factory.mktemp("cli")
    if command == "extract":
        argv = ["extract", str(out / "missing.tif"), flag, value, "--out", str(out / "t.nc")]
    else:
        try:
            x = float(value)
        except ValueError:
            x = float("nan")
        # a valid length would simulate (seconds each): only the refusals are generated
        ok = (
            math.isfinite(x)
            and x > 0
            and (
                (flag == "--frame-rate" and 2 <= 60 * x <= 3_600_000)
                or (flag == "--duration" and 2 <= 30 * x <= 3_600_000)
            )
        )
        assume(flag in ("--frame-rate", "--duration") and not ok)
        argv = ["simulate", flag, value, "--out", str(out / "s")]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: a value of the wrong type
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert lines and (len(lines) == 1 or lines[0].startswith("usage:"))
    assert not (out / "t.nc").exists() and not (out / "s").exists()


def test_the_fuzz_budget_is_what_the_readme_says():
    import ast

    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    total = sum(
        kw.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "settings"
        for kw in node.keywords
        if kw.arg == "max_examples"
    )
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"{total} generated cases" in readme, total


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
