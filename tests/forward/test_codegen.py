"""Terms defined by a rate expression: generated kernels against the hand-written ones."""

import json
from pathlib import Path

import numpy as np
import pytest
import sympy

from cainfer.forward import (
    PMCA,
    SERCA,
    CellModel,
    EventInflux,
    Flux,
    LinearExtrusion,
    Parameter,
    PlasmaLeak,
    Prior,
    Stimulus,
    _codegen,
    fluxes,
    pumps_model,
)
from cainfer.testing import check_term, reference_simulate

T = np.arange(0, 12, 1 / 30)
STIM = Stimulus(events=[1.0, 4.0, 4.05, 8.0])


class HillPump(Flux):
    """PMCA written as a rate: ``−V·x/(1 + x)``, ``x = (c/K)^n``."""

    compartment = "pm"
    per_buffer = True
    cytosolic_hill = True
    default_name = "pmca"
    declared = PMCA.declared

    def rate(self, c, c_er):
        x = (c / self.k) ** self.hill
        return -self.vmax * x / (1 + x)


class Uptake(Flux):
    """SERCA written as a rate, in the other common form ``V·c^n/(K^n + c^n)``."""

    compartment = "er"
    default_name = "serca"
    declared = SERCA.declared

    def rate(self, c, c_er):
        return -self.vmax * c**self.hill / (self.k**self.hill + c**self.hill)


class Extrusion(Flux):
    """Linear extrusion toward the resting level, as a rate."""

    compartment = "pm"
    per_buffer = True
    default_name = ""
    declared = LinearExtrusion.declared

    def rate(self, c, c_er):
        return -self.gamma * (c - self.c_rest)


def _swap(model, old, new):
    new = new if isinstance(new, Flux) else new()
    terms = [new if isinstance(f, old) else f for f in model.fluxes]
    return CellModel(
        terms,
        indicator=model.indicator,
        er=model.er,
        c_rest=model.parameters["c_rest"].default,
        kappa_s=model.parameters["kappa_s"].default,
    )


def test_the_built_in_kernels_are_generated_from_the_built_in_rates():
    import cainfer.forward._builtin_terms as B

    if B.SYMPY != sympy.__version__:
        pytest.skip(f"generated with SymPy {B.SYMPY}, this is {sympy.__version__}")
    assert Path(B.__file__).read_text(encoding="utf-8") == _codegen.builtin_source(), (
        "run: python -c 'import cainfer.forward._codegen as g; g.write_builtin()'"
    )
    for name in _codegen.BUILTIN:
        assert _codegen.generate(getattr(fluxes, name)).code == B.CODES[name]


def test_a_rate_written_as_a_built_in_one_runs_on_its_kernels():
    ref = pumps_model()
    mine = _swap(ref, PMCA, HillPump)
    assert not mine.generated_terms  # the same expression: the built-in kernels run it
    np.testing.assert_array_equal(mine._codes, ref._codes)
    a, b = ref.simulate(None, T, STIM), mine.simulate(None, T, STIM)
    np.testing.assert_array_equal(b.dff, a.dff)
    assert mine.to_dict()["fluxes"][0]["class"] == f"{__name__}:HillPump"


class PumpAsWritten(Flux):
    """PMCA in the form ``V·c^n/(K^n + c^n)``: another expression, so code of its own."""

    compartment = "pm"
    per_buffer = True
    cytosolic_hill = True
    default_name = "pmca"
    declared = PMCA.declared

    def rate(self, c, c_er):
        return -self.vmax * c**self.hill / (self.k**self.hill + c**self.hill)


@pytest.mark.slow  # compiles the solver for a new set of terms
def test_a_new_rate_runs_as_the_built_in_term_it_equals():
    """Other code, the same physics: the same cell, to rounding.

    (The adjoint is checked term by term by check_term, and whole by the fit test in
    tests/infer/test_fit.py; compiling it once more here would double this test.)
    """
    ref = pumps_model()
    mine = _swap(ref, PMCA, PumpAsWritten)
    assert mine.generated_terms and not ref.generated_terms
    assert list(mine.parameters) == list(ref.parameters)
    a = ref.simulate(None, T, STIM, substeps=4)
    b = mine.simulate(None, T, STIM, substeps=4)
    np.testing.assert_allclose(b.dff, a.dff, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.ca, a.ca, rtol=1e-10, atol=1e-12)
    c = np.array([0.05, 0.3, 3.0])
    f1, f2 = ref.term_fluxes(c), mine.term_fluxes(c)
    for k in f1:
        np.testing.assert_allclose(f2[k][0], f1[k][0], rtol=1e-13)


def test_a_term_reading_the_resting_level_matches_solve_ivp_and_the_analytic_decay():
    model = CellModel([Extrusion(), EventInflux()], indicator="OGB-1")
    params = {"gamma": 300.0, "influx_amplitude": 8.0}
    ds = model.simulate(params, T, STIM)
    ref = reference_simulate(model, params, T, STIM)
    np.testing.assert_allclose(ds.ca.values, ref["ca"], rtol=2e-5)
    # and the built-in term gives the same cell
    builtin = CellModel([LinearExtrusion(), EventInflux()], indicator="OGB-1")
    np.testing.assert_allclose(ds.ca.values, builtin.simulate(params, T, STIM).ca, rtol=1e-12)
    # (its pull-back into the resting level it reads: check_term, below)


class Exotic(Flux):
    """A made-up ER term using exp, sqrt, log, a Hill factor and both resting levels."""

    compartment = "er"
    default_name = "exo"
    declared = (
        Parameter("a", "1/s", 2.0, Prior("lognormal", 2.0, 1.0, "test")),
        Parameter("b", "µM", 30.0, Prior("lognormal", 30.0, 1.0, "test"), role="affinity"),
        Parameter("n", "1", 1.7, Prior("uniform", 1.0, 3.0, "test"), role="hill"),
    )

    def rate(self, c, c_er):
        gate = 1 / (1 + (c_er / self.b) ** self.n)
        return (
            self.a * sympy.exp(-c / self.b) * (c_er - c) * sympy.sqrt(c_er) * gate
            + sympy.log(1 + c / self.c_rest) * self.c_er_rest * 1e-3
        )


@pytest.mark.parametrize(
    "term", [HillPump(), Uptake(), Extrusion(), Exotic(), PumpAsWritten()], ids=repr
)
def test_generated_adjoint_matches_finite_differences(term):
    assert check_term(term) < 1e-6


def test_hill_partials_are_skipped_unless_asked_for():
    gen = _codegen.generate(HillPump)
    assert "if need_n:" in gen.vjp_src
    body, _, hill = gen.vjp_src.partition("if need_n:")
    assert "_glog" in hill and "_glog" not in body  # the logarithms only where needed
    assert gen.flux_src.count("_gpow(") == 1  # one power: (c/K)^n, shared by value and partials
    assert gen.vjp_src.count("_gpow(") == 1


def test_check_term_catches_a_wrong_adjoint(monkeypatch):
    gen = _codegen.generate(Extrusion)
    bad = gen.vjp_src.replace("d_c = -x0", "d_c = -1.01 * x0")
    assert bad != gen.vjp_src

    class Wrong(Flux):
        compartment = "pm"
        default_name = ""
        declared = LinearExtrusion.declared

        def rate(self, c, c_er):
            return -self.gamma * (c - self.c_rest)

    code = _codegen.generate(Wrong)
    monkeypatch.setitem(
        _codegen._BY_CLASS,
        Wrong,
        _codegen.GeneratedTerm(
            code.code + 1, code.flux_name + "x", code.vjp_name + "x",
            code.flux_src.replace(code.flux_name, code.flux_name + "x"),
            bad.replace(code.vjp_name, code.vjp_name + "x"), code.expression,
        ),
    )  # fmt: skip
    with pytest.raises(AssertionError, match="d/dc"):
        check_term(Wrong())


def test_a_model_with_a_rate_term_round_trips_through_its_description():
    model = _swap(pumps_model(), PMCA, HillPump(k=0.4))
    spec = json.loads(json.dumps(model.to_dict()))
    assert spec["fluxes"][0]["class"] == f"{__name__}:HillPump"
    again = CellModel.from_dict(spec)
    assert type(again.fluxes[0]) is HillPump
    assert again.defaults() == model.defaults()
    spec["fluxes"][0]["class"] = f"{__name__}:NotDefined"
    with pytest.raises(ValueError, match=r"NotDefined.*not defined in this process"):
        CellModel.from_dict(spec)


def _term(rate, *, compartment="pm", declared=None, **attrs):
    body = {
        "compartment": compartment,
        "default_name": "t",
        "declared": declared
        or (Parameter("v", "µM/s", 1.0, Prior("lognormal", 1.0, 1.0, "test"), role="capacity"),),
        "rate": rate,
        **attrs,
    }
    return type("Custom", (Flux,), body)


@pytest.mark.parametrize(
    ("cls", "error", "match"),
    [
        (lambda: _term(lambda s, c, e: s.vmax * c), AttributeError, r"self\.vmax.*\bv\b"),
        (lambda: _term(lambda s, c, e: s.v * e), TypeError, "uses c_er: set needs_er"),
        (lambda: _term(lambda s, c, e: s.v * sympy.zeta(c)), TypeError, "zeta"),
        (lambda: _term(lambda s, c, e: "v"), TypeError, "expression"),
        (lambda: _term(lambda s, c, e: s.v / 0 * c), TypeError, "finite real"),
        (
            lambda: _term(
                lambda s, c, e: s.c,
                declared=(Parameter("c", "µM", 1.0, Prior("lognormal", 1.0, 1.0, "test")),),
            ),
            TypeError,
            "reserved",
        ),
    ],
    ids=["unknown-parameter", "er-without-er", "unsupported-function", "not-an-expression",
         "infinite", "reserved-name"],
)  # fmt: skip
def test_a_rate_the_kernels_cannot_run_is_refused_by_name(cls, error, match):
    with pytest.raises(error, match=match):
        CellModel([cls()(), PlasmaLeak()])


def test_a_rate_term_declares_what_it_needs():
    with pytest.raises(TypeError, match="compartment"):
        _term(lambda s, c, e: s.v, compartment="golgi")
    with pytest.raises(TypeError, match="only the built-in leaks have values set by the resting"):
        _term(lambda s, c, e: s.v + s.d, derived=("d",))
    er_term = _term(lambda s, c, e: s.v * (e - c), compartment="er")
    assert er_term.needs_er
    assert CellModel([er_term(), PlasmaLeak()]).has_er
