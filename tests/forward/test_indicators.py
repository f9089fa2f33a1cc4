import pytest

from cainfer.forward import Indicator, get_indicator, indicator_names


def test_catalogue_values_match_published_constants():
    # (K_d nM, Hill, ΔF/F_max) as compiled from Badura 2014 and Dana 2019
    published = {
        "OGB-1": (250, 1.0, 14.0),
        "GCaMP6f": (290, 2.7, 25.2),
        "GCaMP6s": (147, 2.45, 27.2),
        "GCaMP3": (287, 2.52, 12.0),
        "jGCaMP7f": (174, 2.3, 30.2),
        "jGCaMP7s": (68, 2.49, 40.4),
        "jGCaMP7b": (82, 3.06, 22.1),
        "jGCaMP7c": (298, 2.44, 145.6),
    }
    assert set(indicator_names()) == set(published)
    for name, (kd_nm, n, dff_max) in published.items():
        ind = get_indicator(name)
        assert ind.kd == pytest.approx(kd_nm / 1000)
        assert ind.hill == n
        assert ind.rf == pytest.approx(1 + dff_max)
        assert ind.dff_max == pytest.approx(dff_max)
        assert "doi" in ind.source


def test_lookup_is_case_insensitive_and_overrides_fields():
    ind = get_indicator("gcamp6F", b_total=7.0)
    assert ind.name == "GCaMP6f" and ind.b_total == 7.0
    assert get_indicator("GCaMP6f").b_total != 7.0  # catalogue entry unchanged


def test_unknown_indicator_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown indicator 'Fluo-9'.*OGB-1.*jGCaMP7c"):
        get_indicator("Fluo-9")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kd": -0.1}, "kd"),
        ({"kd": float("nan")}, "kd"),
        ({"hill": 0.0}, "hill"),
        ({"rf": 1.0}, "rf"),
        ({"rf": 0.0}, "rf"),
        ({"b_total": -1.0}, "b_total"),
        ({"k_on": 1.0}, "both k_on and k_off"),
        ({"k_on": 100.0, "k_off": 50.0}, "disagrees with kd"),
    ],
)
def test_bad_indicator_constants_raise(kwargs, match):
    base = {"name": "x", "kd": 0.3, "hill": 1.0, "rf": 5.0}
    with pytest.raises(ValueError, match=match):
        Indicator(**(base | kwargs))


def test_consistent_rate_constants_are_accepted():
    ind = Indicator("x", kd=0.25, hill=1.0, rf=5.0, k_on=400.0, k_off=100.0)
    assert ind.k_off / ind.k_on == pytest.approx(ind.kd)
