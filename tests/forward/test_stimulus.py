import numpy as np
import pytest

from cainfer.forward import Stimulus


def test_events_are_sorted_with_their_weights():
    s = Stimulus(events=[3.0, 1.0, 2.0], weights=[30.0, 10.0, 20.0])
    np.testing.assert_array_equal(s.events, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(s.event_weights, [10.0, 20.0, 30.0])


def test_train_builds_bursts():
    s = Stimulus.train([1.0, 5.0], n=3, interval=0.02)
    np.testing.assert_allclose(s.events, [1.0, 1.02, 1.04, 5.0, 5.02, 5.04])
    np.testing.assert_array_equal(s.event_weights, 1.0)


def test_csv_round_trip(tmp_path):
    s = Stimulus(events=[0.5, 1.0 / 3.0], weights=[2.0, 0.25])
    s.to_csv(tmp_path / "stim.csv")
    back = Stimulus.from_csv(tmp_path / "stim.csv")
    np.testing.assert_array_equal(back.events, s.events)
    np.testing.assert_array_equal(back.event_weights, s.event_weights)


def test_csv_round_trip_with_a_waveform(tmp_path):
    s = Stimulus(events=[2.0, 1.0], weights=[0.5, 2.0], waveform_time=[0.0, 3.0, 9.5],
                 waveform=[0.0, 0.45, 0.45])  # fmt: skip
    s.to_csv(tmp_path / "stim.csv")
    back = Stimulus.from_csv(tmp_path / "stim.csv")
    np.testing.assert_array_equal(back.events, [1.0, 2.0])
    np.testing.assert_array_equal(back.event_weights, [2.0, 0.5])
    np.testing.assert_array_equal(back.waveform_time, s.waveform_time)
    np.testing.assert_array_equal(back.waveform, s.waveform)
    (tmp_path / "ip3.csv").write_text("time_s,waveform\n0,0\n5,0.5\n60,0.5\n")
    ip3 = Stimulus.from_csv(tmp_path / "ip3.csv")
    assert not ip3.has_events and ip3.waveform.tolist() == [0.0, 0.5, 0.5]
    (tmp_path / "both.csv").write_text("time_s,weight,waveform\n1,1,0.5\n")
    with pytest.raises(ValueError, match=r"both\.csv:2: .*not both"):
        Stimulus.from_csv(tmp_path / "both.csv")
    (tmp_path / "order.csv").write_text("time_s,waveform\n5,0\n1,0.5\n")
    with pytest.raises(ValueError, match=r"order\.csv: .*strictly increasing"):
        Stimulus.from_csv(tmp_path / "order.csv")


def test_csv_without_weight_column(tmp_path):
    (tmp_path / "s.csv").write_text("time_s\n1.5\n2.5\n")
    np.testing.assert_array_equal(Stimulus.from_csv(tmp_path / "s.csv").event_weights, [1.0, 1.0])


def test_bad_csv_names_file_and_line(tmp_path):
    (tmp_path / "a.csv").write_text("t,weight\n1,1\n")
    with pytest.raises(ValueError, match=r"a\.csv: stimulus CSV needs a 'time_s' column"):
        Stimulus.from_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("time_s\n1.0\nsoon\n")
    with pytest.raises(ValueError, match=r"b\.csv:3: not a number"):
        Stimulus.from_csv(tmp_path / "b.csv")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"events": [1.0, np.nan]}, "NaN"),
        ({"events": [1.0, 2.0], "weights": [1.0]}, "must match"),
        ({"events": [1.0], "weights": [-1.0]}, "≥ 0"),
        ({"waveform_time": [0.0, 1.0], "waveform": [1.0]}, "waveform has 1 values"),
        ({"waveform_time": [0.0, 0.0], "waveform": [1.0, 1.0]}, "strictly increasing"),
    ],
)
def test_bad_stimulus_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Stimulus(**kwargs)
