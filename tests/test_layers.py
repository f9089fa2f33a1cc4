"""The import directions of the README's "Architecture": lower layers never import higher ones."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cainfer"
README = PKG.parent / "README.md"

_SAMPLING = {"pymc", "arviz", "pytensor", "nutpie", "jax", "numpyro"}
_ORCHESTRATION = {"dask", "distributed", "cainfer.pipeline", "cainfer.cli"}

# module or package (relative to cainfer/) -> imports it must never make
FORBIDDEN = {
    "io": {*_SAMPLING, *_ORCHESTRATION, "skimage", "scipy", "numba",
           "cainfer.forward", "cainfer.extract", "cainfer.infer", "cainfer.synthetic",
           "cainfer.testing"},
    "extract": {*_SAMPLING, *_ORCHESTRATION, "numba",
                "cainfer.forward", "cainfer.infer", "cainfer.synthetic", "cainfer.testing"},
    "forward": {*_SAMPLING, *_ORCHESTRATION, "skimage", "tifffile",
                "cainfer.io", "cainfer.extract", "cainfer.infer", "cainfer.synthetic",
                "cainfer.testing"},
    "infer": {*_ORCHESTRATION, "skimage", "tifffile",
              "cainfer.io", "cainfer.extract", "cainfer.synthetic", "cainfer.testing"},
    "pipeline": {"cainfer.cli", "cainfer.testing"},
    "synthetic.py": {*_SAMPLING, *_ORCHESTRATION, "cainfer.extract", "cainfer.infer"},
    "testing.py": {*_SAMPLING, *_ORCHESTRATION, "cainfer.io", "cainfer.extract", "cainfer.infer",
                   "cainfer.synthetic"},
    # shared helpers: the standard library only
    "_files.py": {"cainfer", "numpy", "xarray", *_SAMPLING, *_ORCHESTRATION},
    "_checks.py": {"cainfer", "numpy", "xarray", *_SAMPLING, *_ORCHESTRATION},
    "_options.py": {"cainfer", "numpy", "xarray", *_SAMPLING, *_ORCHESTRATION},
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _files(part: str) -> list[Path]:
    target = PKG / part
    return sorted(target.rglob("*.py")) if target.is_dir() else [target]


def test_every_module_has_a_rule():
    """A new top-level module or package gets a row here (and in the README) first."""
    ruled = {p.split("/")[0] for p in FORBIDDEN} | {"__init__.py", "cli.py", "py.typed"}
    present = {p.name for p in PKG.iterdir() if not p.name.startswith("__pycache__")}
    assert present - ruled == set()


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_layer_imports(part):
    files = _files(part)
    assert files, part
    for path in files:
        for name in _imports(path):
            bad = [f for f in FORBIDDEN[part] if name == f or name.startswith(f + ".")]
            assert not bad, f"{path.relative_to(PKG)} imports {name}"


def test_a_rule_catches_a_forbidden_import(tmp_path):
    """The checker itself: an import, a from-import and a lazy one are all seen."""
    src = tmp_path / "m.py"
    src.write_text("import pymc\nfrom cainfer.infer import fit\ndef f():\n    import dask.array\n")
    assert {"pymc", "cainfer.infer", "dask.array"} <= _imports(src)


def test_the_physics_and_the_data_run_without_the_sampler():
    """Importing every data and physics module and simulating never load the sampler.

    Nor does reading a config (the pipeline's config module), and a model of
    built-in terms never loads SymPy (their code is generated ahead).
    (Dask is not checked: xarray imports it, when installed, to recognise its arrays.)
    """
    code = (
        "import sys, numpy as np\n"
        "import cainfer, cainfer.io, cainfer.extract, cainfer.forward, cainfer.synthetic\n"
        "import cainfer.testing, cainfer.pipeline.config\n"
        "from cainfer.forward import Stimulus, single_compartment\n"
        "t = np.arange(60) / 30.0\n"
        "ds = single_compartment('OGB-1').simulate(None, t, Stimulus(events=[0.5]))\n"
        "assert float(ds['dff'].max()) > 0\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(_SAMPLING)!r}))\n"
        "bad += ['sympy'] if 'sympy' in sys.modules else []\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"loaded: {out.stdout.strip()}"


def test_the_readme_states_the_rules():
    """The README's layer table names every layer this test enforces."""
    text = README.read_text()
    assert "## Architecture" in text
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    for part in ("cainfer/io", "cainfer/extract", "cainfer/forward", "cainfer/infer",
                 "cainfer/pipeline", "cainfer/synthetic.py", "cainfer/testing.py"):  # fmt: skip
        assert f"`{part}`" in section, part
