"""The import directions of DESIGN.md: lower layers never import higher ones."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cainfer"
FORBIDDEN = {
    "io": {
        "pymc",
        "arviz",
        "pytensor",
        "skimage",
        "scipy",
        "cainfer.forward",
        "cainfer.extract",
        "cainfer.infer",
        "cainfer.pipeline",
    },
    "extract": {
        "pymc",
        "arviz",
        "pytensor",
        "cainfer.forward",
        "cainfer.infer",
        "cainfer.pipeline",
    },
    "forward": {
        "pymc",
        "arviz",
        "pytensor",
        "cainfer.extract",
        "cainfer.infer",
        "cainfer.pipeline",
        "cainfer.io",
    },
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer):
    for path in (PKG / layer).rglob("*.py"):
        for name in _imports(path):
            bad = [f for f in FORBIDDEN[layer] if name == f or name.startswith(f + ".")]
            assert not bad, f"{path.relative_to(PKG)} imports {name}"
