import numpy as np
import pytest
import xarray as xr

from cainfer.forward import Stimulus, pumps_model
from cainfer.synthetic import simulate_movie


@pytest.fixture(scope="session")
def movie_with_truth(tmp_path_factory):
    """A 96x96, 600-frame synthetic recording of 10 active cells, with its truth."""
    out = tmp_path_factory.mktemp("extract") / "rec.tif"
    events = np.array([1.0, 3.0, 3.05, 6.0, 9.0, 9.05, 9.1, 12.0, 15.0, 15.05, 18.0])
    paths = simulate_movie(
        out,
        pumps_model("OGB-1"),
        stimulus=Stimulus(events=events),
        params={"influx_amplitude": 15.0},
        n_cells=10,
        shape=(96, 96),
        n_frames=600,
        brightness=600.0,
        seed=11,
    )
    truth = xr.open_dataset(paths.truth, engine="h5netcdf").load()
    return paths, truth
