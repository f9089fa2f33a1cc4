"""Kernels specialised to a model's terms against the generic kernels they are generated from."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from cainfer.forward import (
    CellModel,
    EventInflux,
    LinearExtrusion,
    Stimulus,
    WaveformInflux,
    preset,
)
from cainfer.forward import _adjoint as A
from cainfer.forward import _builtin_terms as T
from cainfer.forward import _specialize as S

PMCA, LINEAR = T.CODES["PMCA"], T.CODES["LinearExtrusion"]
LEAK, EVENTS = T.CODES["PlasmaLeak"], T.CODES["EventInflux"]

TIME = np.arange(240) / 30.0
STIM = Stimulus(events=[1.0, 1.05, 4.017, 6.5], weights=[1.0, 1.0, 2.0, 1.0])
WAVE = Stimulus(events=[2.0], waveform_time=[3.0, 3.5, 5.0], waveform=[0.0, 1.0, 0.0])


def _both(model, stim, params, substeps=2):
    args = model.kernel_args(TIME, stim, substeps=substeps)
    t, ev_t, ev_w, ev_slot, codes, offsets, wt, wv, has_er, h_max, pm_slot, er_slot = args
    sched = A.K.schedule(t, ev_t, h_max)
    rest = (ev_w, ev_slot, codes, offsets, wt, wv, has_er, pm_slot, er_slot)
    p = model.pack_raw(model.values(params))
    rng = np.random.default_rng(5)
    g_dff, g_c = rng.normal(size=TIME.size), rng.normal(size=TIME.size)
    out = []
    for mod in (A, S.specialized(codes, offsets)):
        dff, c, cc, ee = mod.dff_forward_tape(p, *sched, *rest)
        grads = [
            mod.dff_vjp_tape(p, *sched, *rest, c, cc, ee, g_dff, g_c, n) for n in (True, False)
        ]
        out.append((dff, c, cc, ee, *grads))
    return out


@pytest.mark.parametrize(
    ("model", "stim", "params"),
    [
        (preset("single_compartment", "OGB-1"), STIM, {"influx_amplitude": 20.0}),
        (preset("pumps", "GCaMP6f"), STIM, {"influx_amplitude": 20.0}),
        (preset("er", "jGCaMP7s"), STIM, {"influx_amplitude": 60.0}),
        (
            CellModel([LinearExtrusion(), EventInflux(), WaveformInflux()], indicator="GCaMP6s"),
            WAVE,
            {"waveform_amplitude": 30.0},
        ),
    ],
    ids=["single", "pumps", "er", "waveform"],
)
def test_specialised_kernels_reproduce_the_generic_ones(model, stim, params):
    generic, special = _both(model, stim, params)
    # the same operations in the same order, but compiled separately: whether the
    # compiler fuses a*b+c into one FMA can differ between the two copies and between
    # CPUs, so they agree to rounding accumulated over the solve (measured: up to
    # 4e-12 relative), not bit for bit; 1e-9 leaves a wide margin above that and is
    # far below the solver's error against solve_ivp (1e-6)
    for a, b in zip(generic, special, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9 * np.abs(a).max())
    assert np.abs(generic[4]).max() > 0


def test_generated_package_is_written_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("CAINFER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(S, "_LOADED", {})
    monkeypatch.setattr(S, "_BY_TERMS", {})
    codes, offsets = (PMCA, LEAK, EVENTS), (10, 13, 14)
    mod = S.specialized(codes, offsets)
    assert mod is S.specialized(list(codes), np.array(offsets))
    pkgs = list((tmp_path / "kernels").iterdir())
    assert [p.name[:2] for p in pkgs] == ["k_"]  # no temporary directory left behind
    src = (pkgs[0] / "_kernels.py").read_text()
    assert f"{T.FLUX[PMCA]}(10, c, cer, u, p)" in src and f"{T.FLUX[LEAK]}(13, c, cer, u, p)" in src
    # another process finding the package reuses it; a concurrent writer's copy is kept
    src_k, src_a = S.sources(codes, offsets)
    S._write_package(tmp_path / "kernels", pkgs[0], src_k, src_a)
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [pkgs[0].name]
    # other terms get another package
    S.specialized((LINEAR, EVENTS), (10, 11))
    assert len(list((tmp_path / "kernels").iterdir())) == 2
    # another cache directory in the same process: its own files are imported
    monkeypatch.setenv("CAINFER_CACHE_DIR", str(tmp_path / "other"))
    monkeypatch.setattr(S, "_LOADED", {})
    other = S.specialized(codes, offsets)
    assert Path(other.__file__).parent == tmp_path / "other" / "kernels" / pkgs[0].name
    assert Path(other.K.__file__).parent == Path(other.__file__).parent
    assert Path(mod.__file__).parent == pkgs[0]


# a generated kernel package, and a generated system module (given as its source text)
_KERNELS_SCRIPT = (
    "from cainfer.forward import _builtin_terms as T, _specialize as S\n"
    "c = T.CODES\n"
    "mod = S.specialized((c['PMCA'], c['PlasmaLeak'], c['EventInflux']), (10, 13, 14))\n"
    "total = 0.1 * (1.0 + 60.0) + 50.0 * 0.1 / (0.1 + 0.25)\n"
    "print(mod.K.free_from_total(total, 60.0, 50.0, 0.25, 1.0))\n"
)
_SYSTEM_SCRIPT = (
    "from cainfer.forward._system import compiled\n"
    "mod = compiled('from numba import njit\\n@njit(cache=True)\\ndef half(x):\\n"
    "    return 0.5 * x\\n')\n"
    "print(mod.half(0.2))\n"
)


@pytest.mark.parametrize(("script", "folder"), [(_KERNELS_SCRIPT, "kernels/k_*"),
                                                (_SYSTEM_SCRIPT, "systems/s_*")])  # fmt: skip
def test_a_moved_cache_directory_is_used_where_it_now_lies(tmp_path, script, folder):
    # numba's cached machine code names the module it was compiled in and imports it by
    # that name when a new process loads it: a cache directory moved elsewhere (or
    # reached by another mount point) must still load, not fail with ModuleNotFoundError
    first, moved = tmp_path / "first", tmp_path / "moved"

    def run(cache: Path) -> float:
        env = {**os.environ, "CAINFER_CACHE_DIR": str(cache)}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, timeout=600)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        return float(out.stdout.split()[-1])

    assert run(first) == pytest.approx(0.1, rel=1e-12)
    assert list(first.glob(f"{folder}/__pycache__/*.nbi")), "no machine code was cached"
    first.rename(moved)
    assert run(moved) == pytest.approx(0.1, rel=1e-12)


def test_an_unwritable_cache_is_replaced_by_a_private_one_for_the_process(tmp_path):
    # a cache root that cannot be written (here a file; a read-only home, a container run
    # as another user): numba would find no place for cainfer's kernels at all and refuse
    # to load them, so a temporary directory stands in, for this process only
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    script = (
        "from cainfer.forward import _builtin_terms as T, _cache as C, _kernels as K\n"
        "from cainfer.forward import _specialize as S\n"
        "c = T.CODES\n"
        "mod = S.specialized((c['PMCA'], c['PlasmaLeak'], c['EventInflux']), (10, 13, 14))\n"
        "args = (0.1 * 61.0 + 5.0 / 0.35, 60.0, 50.0, 0.25, 1.0)\n"
        "assert abs(K.free_from_total(*args) - mod.K.free_from_total(*args)) < 1e-12\n"
        "print(mod.K.free_from_total(*args))\n"
        "print(C.cache_dir())\n"
        "print(mod.__file__)\n"
        "print(len(list((C.cache_dir() / 'numba').rglob('*.nbi'))))\n"
    )
    env = {**os.environ, "CAINFER_CACHE_DIR": str(blocker)}
    out = subprocess.run([sys.executable, "-W", "always", "-c", script], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    value, private, module, n_cached = out.stdout.split()[-4:]
    assert float(value) == pytest.approx(0.1, rel=1e-12)
    assert f"cannot write its compile cache under {blocker}" in out.stderr
    assert "CAINFER_CACHE_DIR" in out.stderr
    assert Path(module).is_relative_to(private)  # specialised, at full speed
    assert int(n_cached) > 0  # cainfer's own kernels had a place in the cache too
    assert not Path(private).exists()  # removed when the process exited
    assert blocker.read_text() == ""


def test_a_package_that_cannot_be_written_falls_back_to_the_generic_kernels(monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(S, "_write_package", fail)
    monkeypatch.setattr(S, "_LOADED", {})
    monkeypatch.setattr(S, "_BY_TERMS", {})
    monkeypatch.setattr(S, "_import", fail)
    with pytest.warns(RuntimeWarning, match="CAINFER_CACHE_DIR"):
        mod = S.specialized((PMCA, LEAK, EVENTS), (10, 13, 14))
    assert mod is A
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert S.specialized((PMCA, LEAK, EVENTS), (10, 13, 14)) is A  # warned once


def test_mismatched_terms_are_rejected():
    with pytest.raises(ValueError, match="2 codes but 1 offsets"):
        S.specialized((PMCA, LEAK), (10,))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CAINFER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert S.cache_dir() == tmp_path / "cainfer"
    monkeypatch.setenv("CAINFER_CACHE_DIR", str(tmp_path / "c"))
    assert S.cache_dir() == tmp_path / "c"
    # relative settings: CAINFER_CACHE_DIR taken from where the process is, a relative
    # XDG_CACHE_HOME ignored (the XDG specification calls it invalid)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAINFER_CACHE_DIR", "rel")
    assert S.cache_dir() == tmp_path / "rel"
    monkeypatch.delenv("CAINFER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert S.cache_dir() == tmp_path / "home" / ".cache" / "cainfer"


def test_every_kernel_pins_fastmath_off():
    # numba compiles a kernel without its own fastmath setting with the flags of
    # the first jitted caller (PyTensor's numba backend: fast-math on), so the
    # same call would round differently depending on what ran first
    from numba.core.registry import CPUDispatcher

    special = S.specialized((PMCA, LEAK, EVENTS), (10, 13, 14))
    modules = (T, A.K, A, special.K, special)
    kernels = [f for m in modules for f in vars(m).values() if isinstance(f, CPUDispatcher)]
    assert len(kernels) > 40
    assert all(f.targetoptions.get("fastmath") is False for f in kernels), [
        f.__name__ for f in kernels if f.targetoptions.get("fastmath") is not False
    ]


def test_only_small_models_inline_the_adjoint_step():
    # inlining four copies of every term's pull-back into each RK4 step made large
    # models compile tens of seconds longer; small ones keep it (it is faster there)
    def inlined(src: str, name: str) -> bool:
        head = src[: src.index(f"def {name}(")].rstrip().splitlines()[-1]
        assert head.startswith("@njit(")
        return 'inline="always"' in head

    def last(src: str, name: str) -> str:  # the generated flux_vjp redefines the generic one
        return src[src.rindex(f"def {name}(") - 200 :]

    small = S.sources((PMCA, LEAK, EVENTS), (10, 13, 14))[1]
    large = S.sources((PMCA, LINEAR, LEAK, EVENTS), (10, 13, 14, 15))[1]
    assert inlined(small, "rk4_step_vjp") and inlined(last(small, "flux_vjp"), "flux_vjp")
    assert not inlined(large, "rk4_step_vjp")
    assert not inlined(last(large, "flux_vjp"), "flux_vjp")
