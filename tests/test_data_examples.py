import hashlib
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "data_examples"
FILES = [
    f"{stem}{suffix}"
    for stem in ("example", "er_example")
    for suffix in (".tif", "_rois.tif", "_stimulus.csv", "_truth.nc")
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_example_regenerates_byte_for_byte(tmp_path):
    script = runpy.run_path(str(EXAMPLES / "make_example.py"))
    script["make"](tmp_path)
    script["make_er"](tmp_path)
    for name in FILES:
        assert _sha(tmp_path / name) == _sha(EXAMPLES / name), (
            f"{name} differs: after a deliberate change to the simulation, "
            "run python data_examples/make_example.py and commit the files"
        )


def test_example_is_small():
    total = sum((EXAMPLES / n).stat().st_size for n in FILES)
    assert total < 20 * 2**20
