"""The bundled examples are what ``data_examples/make_example.py`` makes, by value.

Regeneration is compared by value, not by file hash: the simulation runs through
compiled kernels, FFTs and libm, whose last bits can differ between CPUs and
library builds. What regeneration guarantees (README, "Synthetic data"):

- truth arrays (ΔF/F, calcium, fluorescence, shifts, footprints) within 1e-9
  relative of the bundled ones: far above rounding differences (measured up to
  4e-12 relative between two builds of the solver), far below anything a fit sees;
- movie pixels (integer counts) within ±1 count, and only where rounding to an
  integer sits on a boundary: at most one pixel in 10⁴ may differ at all;
- ROI labels identical except where a footprint sits on its 0.5 threshold (at
  most 2 pixels); stimulus times within 1e-12 s.
"""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import tifffile
import xarray as xr

from cainfer.forward import Stimulus

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "data_examples"
STEMS = ("example", "er_example", "fura_example")
SUFFIXES = (".tif", "_rois.tif", "_stimulus.csv", "_truth.nc")
FILES = [f"{stem}{suffix}" for stem in STEMS for suffix in SUFFIXES]

REGENERATE = (
    "differs from the bundled file: after a deliberate change to the simulation, "
    "run python data_examples/make_example.py and commit the files"
)


def assert_movies_match(new: Path, old: Path) -> None:
    """Integer pixels within ±1 count, on at most one pixel in 10⁴; same metadata."""
    with tifffile.TiffFile(new) as a, tifffile.TiffFile(old) as b:
        x, y = a.asarray(), b.asarray()
        assert a.imagej_metadata["finterval"] == pytest.approx(b.imagej_metadata["finterval"])
    assert x.shape == y.shape and x.dtype == y.dtype, f"{old.name} {REGENERATE}"
    diff = np.abs(x.astype(np.int64) - y.astype(np.int64))
    assert diff.max() <= 1, f"{old.name} {REGENERATE} (max difference {diff.max()} counts)"
    assert np.count_nonzero(diff) <= x.size // 10_000, f"{old.name} {REGENERATE}"


def assert_labels_match(new: Path, old: Path) -> None:
    x, y = tifffile.imread(new), tifffile.imread(old)
    assert x.shape == y.shape and x.dtype == y.dtype
    assert np.count_nonzero(x != y) <= 2, f"{old.name} {REGENERATE}"


def _assert_close(a, b, where: str) -> None:
    """Nested JSON values equal, floats to 1e-12 relative."""
    if isinstance(b, list | dict):
        assert type(a) is type(b) and len(a) == len(b), where
        keys = b.keys() if isinstance(b, dict) else range(len(b))
        for k in keys:
            _assert_close(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12), where
    else:
        assert a == b, where


def assert_truths_match(new: Path, old: Path) -> None:
    with (
        xr.open_dataset(new, engine="h5netcdf") as a,
        xr.open_dataset(old, engine="h5netcdf") as b,
    ):
        assert set(a.data_vars) == set(b.data_vars) and a.sizes == b.sizes, old.name
        for name, var in b.variables.items():
            if np.issubdtype(var.dtype, np.floating):
                scale = float(np.nanmax(np.abs(var.values))) if var.size else 0.0
                np.testing.assert_allclose(
                    a[name].values, var.values, rtol=1e-9, atol=1e-9 * scale,
                    err_msg=f"{old.name}:{name} {REGENERATE}",
                )  # fmt: skip
            elif name == "masks":  # footprint ≥ 0.5: a pixel on the threshold may flip
                assert np.count_nonzero(a[name].values != var.values) <= 2, name
            else:
                np.testing.assert_array_equal(a[name].values, var.values, err_msg=name)
        for key, value in b.attrs.items():
            if key in ("parameters", "events", "event_weights"):
                _assert_close(json.loads(a.attrs[key]), json.loads(value), key)
            elif isinstance(value, float):
                assert a.attrs[key] == pytest.approx(value, rel=1e-12), key
            else:
                assert a.attrs[key] == value, key


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples")
    script = runpy.run_path(str(EXAMPLES / "make_example.py"))
    script["make"](out)
    script["make_er"](out)
    script["make_fura"](out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stem", STEMS)
def test_example_regenerates_by_value(regenerated, stem):
    assert_movies_match(regenerated / f"{stem}.tif", EXAMPLES / f"{stem}.tif")
    assert_labels_match(regenerated / f"{stem}_rois.tif", EXAMPLES / f"{stem}_rois.tif")
    assert_truths_match(regenerated / f"{stem}_truth.nc", EXAMPLES / f"{stem}_truth.nc")
    new = Stimulus.from_csv(regenerated / f"{stem}_stimulus.csv")
    old = Stimulus.from_csv(EXAMPLES / f"{stem}_stimulus.csv")
    np.testing.assert_allclose(new.events, old.events, rtol=0, atol=1e-12)
    np.testing.assert_allclose(new.event_weights, old.event_weights, rtol=1e-12)


def test_comparison_catches_a_changed_movie(tmp_path):
    """The by-value check is not vacuous: two counts off on one pixel, or many pixels, fail."""
    movie = tifffile.imread(EXAMPLES / "example.tif")
    meta = {"axes": "TYX", "finterval": 1 / 30}
    ref = tmp_path / "ref.tif"
    tifffile.imwrite(ref, movie[:50], imagej=True, metadata=meta)
    one_off = movie[:50].copy()
    one_off[3, 4, 5] += 1
    tifffile.imwrite(tmp_path / "a.tif", one_off, imagej=True, metadata=meta)
    assert_movies_match(tmp_path / "a.tif", ref)  # one count on one pixel: a rounding flip
    two_off = movie[:50].copy()
    two_off[3, 4, 5] += 2
    tifffile.imwrite(tmp_path / "b.tif", two_off, imagej=True, metadata=meta)
    with pytest.raises(AssertionError, match="max difference 2"):
        assert_movies_match(tmp_path / "b.tif", ref)
    many = movie[:50].copy()
    many[:, :10, :10] += 1
    tifffile.imwrite(tmp_path / "c.tif", many, imagej=True, metadata=meta)
    with pytest.raises(AssertionError, match="make_example"):
        assert_movies_match(tmp_path / "c.tif", ref)


def test_comparison_catches_a_changed_truth(tmp_path):
    with xr.open_dataset(EXAMPLES / "example_truth.nc", engine="h5netcdf") as ds:
        ds = ds.load()
    changed = ds.copy(deep=True)
    changed["dff"][0, 100] *= 1 + 1e-6
    changed.to_netcdf(tmp_path / "t.nc", engine="h5netcdf")
    with pytest.raises(AssertionError, match="dff"):
        assert_truths_match(tmp_path / "t.nc", EXAMPLES / "example_truth.nc")


def test_example_is_small():
    total = sum((EXAMPLES / n).stat().st_size for n in FILES)
    assert total < 20 * 2**20
