"""What cainfer compiles goes to its cache directory: not into the package, not into $TMPDIR."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cainfer
from cainfer.forward import _cache

PACKAGE = Path(cainfer.__file__).resolve().parent


def _run(code: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")} | env
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_packaged_kernels_cache_under_the_cache_directory(tmp_path):
    code = """
        from pathlib import Path
        from cainfer.forward import _kernels as K
        assert K._cache.NUMBA_LOCATOR
        print(K.buffer_capacity._cache._cache_path)
        print(K.buffer_capacity(0.1, 60.0, 50.0, 0.25, 1.0))
    """
    r = _run(code, {"CAINFER_CACHE_DIR": str(tmp_path / "c")})
    assert r.returncode == 0, r.stderr
    where, value = r.stdout.split()
    assert Path(where).is_relative_to(tmp_path / "c" / "numba")
    assert float(value) > 61.0
    written = list((tmp_path / "c" / "numba").rglob("_kernels.buffer_capacity-*.nbi"))
    assert written, sorted((tmp_path / "c").rglob("*"))


def test_numba_cache_dir_of_the_user_wins(tmp_path):
    code = """
        from cainfer.forward import _kernels as K
        print(K.buffer_capacity._cache._cache_path)
    """
    env = {"CAINFER_CACHE_DIR": str(tmp_path / "c"), "NUMBA_CACHE_DIR": str(tmp_path / "n")}
    r = _run(code, env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(tmp_path / "n")


def test_locator_claims_only_cainfer_sources(tmp_path):
    from numba.core import caching

    locator = next(c for c in caching.CacheImpl._locator_classes if getattr(c, "_cainfer", 0))
    other = tmp_path / "user_module.py"
    other.write_text("def f():\n    return 1\n")
    ns: dict = {}
    exec(compile(other.read_text(), str(other), "exec"), ns)
    assert locator.from_function(ns["f"], str(other)) is None
    mine = locator.from_function(_cache.cache_dir, str(PACKAGE / "forward" / "_cache.py"))
    assert mine is not None
    assert Path(mine.get_cache_path()).is_relative_to(_cache.cache_dir() / "numba")


def test_another_copy_of_the_same_source_reuses_the_machine_code(tmp_path):
    code = """
        from pathlib import Path
        from cainfer.forward import _kernels as K
        K.buffer_capacity(0.1, 60.0, 50.0, 0.25, 1.0)
        print(Path(K.__file__).parents[2])
        print(sum(K.buffer_capacity.stats.cache_hits.values()))
    """
    for copy in ("a", "b"):
        shutil.copytree(PACKAGE, tmp_path / copy / "cainfer",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    hits = []
    for copy in ("a", "b", "a"):
        env = {"CAINFER_CACHE_DIR": str(tmp_path / "c"), "PYTHONPATH": str(tmp_path / copy)}
        r = _run(code, env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        where, hit = r.stdout.split()
        assert Path(where) == tmp_path / copy  # the copy ran, not the installed package
        hits.append(int(hit))
    # a new checkout (another path, new file times) compiles nothing it already has
    assert hits == [0, 1, 1]
    # and an edited source is compiled afresh, not served stale
    src = tmp_path / "b" / "cainfer" / "forward" / "_kernels.py"
    src.write_text(src.read_text() + "\n# edited\n")
    env = {"CAINFER_CACHE_DIR": str(tmp_path / "c"), "PYTHONPATH": str(tmp_path / "b")}
    r = _run(code, env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.split()[-1]) == 0
    # and so is one whose own file is unchanged but whose callees' files changed: cached
    # machine code carries the code of the jitted functions it calls from other files
    r = _run(code, env, cwd=tmp_path)
    assert int(r.stdout.split()[-1]) == 1
    dep = tmp_path / "b" / "cainfer" / "forward" / "_builtin_terms.py"
    dep.write_text(dep.read_text() + "\n# edited\n")
    r = _run(code, env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.split()[-1]) == 0


def test_specialised_kernels_are_rebuilt_when_the_terms_they_call_change(tmp_path):
    """Stale machine code of the built-in terms once ran a new version's models wrongly."""
    code = """
        from pathlib import Path
        import cainfer
        from cainfer.forward import _specialize
        model = cainfer.pumps_model("OGB-1")
        mod = _specialize.specialized(model._codes.tolist(), model._offsets.tolist())
        print(Path(mod.__file__).parent.name)
    """
    shutil.copytree(PACKAGE, tmp_path / "a" / "cainfer",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    env = {"CAINFER_CACHE_DIR": str(tmp_path / "c"), "PYTHONPATH": str(tmp_path / "a")}
    names = []
    for edit in (False, False, True):
        if edit:
            dep = tmp_path / "a" / "cainfer" / "forward" / "_builtin_terms.py"
            dep.write_text(dep.read_text() + "\n# edited\n")
        r = _run(code, env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        names.append(r.stdout.split()[-1])
    assert names[0] == names[1] != names[2]


@pytest.mark.slow
def test_a_fit_leaves_no_files_in_tmpdir(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = """
        import numpy as np
        import cainfer
        from cainfer.synthetic import simulate_traces
        model = cainfer.single_compartment("OGB-1")
        t = np.arange(150) / 30.0
        stim = cainfer.Stimulus(events=[1.0, 3.0])
        y = simulate_traces(model, {"gamma": 500.0}, t, stim, noise_sd=0.03, seed=1)
        for seed in (1, 2):
            cainfer.fit(y.dff.isel(roi=0), model, stimulus=stim, free=["gamma"],
                        draws=100, tune=100, chains=1, seed=seed)
    """
    env = {"TMPDIR": str(tmp), "PYTHONWARNINGS": "ignore"}
    if "CAINFER_CACHE_DIR" in os.environ:
        env["CAINFER_CACHE_DIR"] = os.environ["CAINFER_CACHE_DIR"]
    r = _run(code, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in tmp.iterdir()) == []


@pytest.mark.parametrize("flags", ["", "base_compiledir={mine}"])
def test_a_home_that_cannot_be_written_gets_compile_directories_for_the_process(tmp_path, flags):
    # a home directory that cannot be written (here a file; a read-only home, a container
    # run as another user): PyTensor would fail on import and numba would find no place
    # for cainfer's kernels. A private directory stands in, for this process only; a
    # compile directory the user chose for PyTensor is kept.
    home, tmp, mine = tmp_path / "home", tmp_path / "tmp", tmp_path / "mine"
    home.write_text("")
    tmp.mkdir()
    code = """
        import cainfer.infer  # first: PyTensor is imported with its compile directory set
        import pytensor
        from cainfer.forward import _cache, _kernels
        print(_kernels.buffer_capacity(0.1, 60.0, 50.0, 0.25, 1.0))
        print(_cache.cache_dir())
        print(pytensor.config.base_compiledir)
    """
    drop = ("CAINFER_CACHE_DIR", "XDG_CACHE_HOME", "PYTENSOR_FLAGS", "PYTENSORRC")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("NUMBA_")}
    env |= {"HOME": str(home), "TMPDIR": str(tmp), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    if flags:
        env["PYTENSOR_FLAGS"] = flags.format(mine=mine)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                       capture_output=True, text=True, check=False, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    value, private, compiledir = r.stdout.split()[-3:]
    assert float(value) > 61.0
    assert f"cannot write its compile cache under {home / '.cache' / 'cainfer'}" in r.stderr
    assert Path(private).parent == tmp
    assert Path(compiledir) == (mine if flags else Path(private) / "pytensor")
    assert sorted(tmp.iterdir()) == []  # the private directory went with the process
