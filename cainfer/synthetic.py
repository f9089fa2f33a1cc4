"""Synthetic data with known ground truth: ΔF/F traces and TIFF movies.

Traces come from the forward model (:mod:`cainfer.forward`); movies place cells
with known footprints on a neuropil background, add slow drift (bleaching),
small rigid motion, shot and read noise, and save the ground truth next to the
movie so that extraction and inference can be checked against it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import xarray as xr
from numpy.typing import ArrayLike
from scipy import ndimage

from cainfer._files import atomic_path
from cainfer.forward import CellModel, Stimulus
from cainfer.forward._params import check_positive
from cainfer.forward.ratiometric import RatioCalibration


def _drift_curve(time: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random curve with max |value| = amplitude: Legendre degrees 1-3."""
    if amplitude == 0.0 or time.size < 2:
        return np.zeros(time.size)
    x = 2.0 * (time - time[0]) / (time[-1] - time[0]) - 1.0
    coef = np.concatenate([[0.0], rng.normal(size=3)])
    curve = np.polynomial.legendre.legval(x, coef)
    curve -= curve[0]
    peak = np.max(np.abs(curve))
    return amplitude * curve / peak if peak > 0 else curve


def simulate_traces(
    model: CellModel,
    params: Mapping[str, float] | Sequence[Mapping[str, float]] | None,
    time: ArrayLike,
    stimulus: Stimulus | None = None,
    *,
    noise_sd: float = 0.02,
    drift: float = 0.0,
    seed: int | np.random.Generator = 0,
) -> xr.Dataset:
    """Noisy ΔF/F traces from the forward model, one per parameter set.

    Parameters
    ----------
    model : CellModel
        The cell model.
    params : mapping, sequence of mappings, or None
        Parameter values; a sequence gives one ROI per element.
    time : array_like
        Frame times (s).
    stimulus : Stimulus, optional
        The stimulus, shared by all ROIs.
    noise_sd : float
        Standard deviation of additive Gaussian noise in ΔF/F (dimensionless).
    drift : float
        Largest excursion of a slow baseline drift added to ΔF/F (a random
        cubic in time per ROI, zero at the first frame); 0 for none.
    seed : int or numpy.random.Generator
        Seed of the noise and drift.

    Returns
    -------
    xarray.Dataset
        Dims ``(roi, time)``: ``dff`` (observed), ``dff_true``, ``drift``,
        ``ca`` (free Ca, µM); attrs hold the parameters and noise settings.
    """
    noise_sd = check_positive("noise_sd", noise_sd, allow_zero=True)
    drift = check_positive("drift", drift, allow_zero=True)
    rng = np.random.default_rng(seed)
    sets = [params] if params is None or isinstance(params, Mapping) else list(params)
    sims = [model.simulate(p, time, stimulus) for p in sets]
    t = sims[0].time.values
    true = np.stack([s.dff.values for s in sims])
    ca = np.stack([s.ca.values for s in sims])
    drifts = np.stack([_drift_curve(t, drift, rng) for _ in sims])
    noise = rng.normal(0.0, noise_sd, size=true.shape) if noise_sd > 0 else 0.0
    dims = ("roi", "time")
    return xr.Dataset(
        {
            "dff": (dims, true + drifts + noise, {"long_name": "ΔF/F (observed)"}),
            "dff_true": (dims, true, {"long_name": "ΔF/F (noise-free)"}),
            "drift": (dims, drifts, {"long_name": "baseline drift in ΔF/F"}),
            "ca": (dims, ca, {"units": "µM", "long_name": "free cytosolic calcium"}),
        },
        coords={"roi": np.arange(len(sims)), "time": ("time", t, {"units": "s"})},
        attrs={
            "model": model.name,
            "parameters": json.dumps([model.values(p) for p in sets]),
            "noise_sd": noise_sd,
            "drift": drift,
            "events": json.dumps((stimulus or Stimulus()).events.tolist()),
        },
    )


@dataclass(frozen=True)
class MoviePaths:
    """Files written by :func:`simulate_movie`."""

    movie: Path
    truth: Path
    rois: Path
    stimulus: Path


def _place_cells(
    n: int, shape: tuple[int, int], radius: float, rng: np.random.Generator
) -> np.ndarray:
    """Centres (y, x) at least 2.6 radii apart and one radius from the border."""
    centres: list[tuple[float, float]] = []
    margin = radius + 1.0
    for _ in range(20000):
        if len(centres) == n:
            break
        y = rng.uniform(margin, shape[0] - margin)
        x = rng.uniform(margin, shape[1] - margin)
        if all((y - a) ** 2 + (x - b) ** 2 >= (2.6 * radius) ** 2 for a, b in centres):
            centres.append((y, x))
    if len(centres) < n:
        raise ValueError(
            f"cannot place {n} cells of radius {radius:g} px in a {shape[0]}x{shape[1]} frame"
        )
    return np.array(centres)


def _footprints(centres: np.ndarray, shape: tuple[int, int], radius: float) -> np.ndarray:
    """Soft-edged discs (cell, y, x) with peak 1."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    d = np.sqrt(
        (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
    )
    return 1.0 / (1.0 + np.exp(np.minimum((d - radius) / 0.6, 700.0)))


def simulate_movie(
    path: str | os.PathLike[str],
    model: CellModel,
    *,
    stimulus: Stimulus,
    n_cells: int = 6,
    shape: tuple[int, int] = (64, 64),
    n_frames: int = 600,
    frame_rate: float = 30.0,
    cell_radius: float = 4.5,
    params: Mapping[str, float] | None = None,
    cell_params: Sequence[Mapping[str, float]] | None = None,
    amplitude_spread: float = 0.3,
    brightness: float = 400.0,
    neuropil_brightness: float = 150.0,
    neuropil_dff: float = 0.3,
    neuropil_ratio: float | Sequence[float] = 1.0,
    neuropil_events: float = 0.0,
    bleach: float = 0.1,
    motion_sd: float = 0.3,
    motion_max: float = 2.0,
    read_noise: float = 3.0,
    offset: float = 100.0,
    noise: bool = True,
    chunk: int = 256,
    seed: int = 0,
    calibration: RatioCalibration | None = None,
    neuropil_dye: bool = False,
) -> MoviePaths:
    """Write a synthetic calcium-imaging movie (ImageJ TIFF, uint16) and its ground truth.

    Each cell is a soft disc whose fluorescence follows the forward model
    driven by ``stimulus`` (its influx amplitude varies from cell to cell); a
    smooth neuropil background carries a low-passed mix of the cells'
    activity. The whole field bleaches slowly, moves rigidly (jitter around a
    slow drift), and is read out with Poisson shot noise and Gaussian read noise.
    Frames are generated and written in chunks, so memory does not grow with
    ``n_frames``.

    Parameters
    ----------
    path : path-like
        The movie file (``.tif``). Written next to it: ``<stem>_truth.nc``
        (ground truth), ``<stem>_rois.tif`` (label image of the cells, 0 =
        background) and ``<stem>_stimulus.csv`` (event times).
    model : CellModel
        Forward model of every cell.
    stimulus : Stimulus
        Events within ``[0, (n_frames − 1)/frame_rate]`` s.
    n_cells : int
        Number of cells.
    shape : (int, int)
        Frame size (pixels).
    n_frames : int
        Number of frames.
    frame_rate : float
        Frames per second (stored as the ImageJ frame interval).
    cell_radius : float
        Cell radius (pixels).
    params : mapping, optional
        Model parameters shared by all cells.
    cell_params : sequence of mappings, optional
        Parameters of each cell (``n_cells`` of them), over ``params``; when
        given, ``amplitude_spread`` is not applied.
    amplitude_spread : float
        Relative spread of each cell's influx amplitude (uniform ±spread).
    brightness : float
        Resting cell fluorescence at the footprint peak (photons/frame).
    neuropil_brightness : float
        Mean neuropil fluorescence (photons/frame).
    neuropil_dff : float
        Scale of the neuropil's ΔF/F relative to the mean cell ΔF/F.
    neuropil_ratio : float or sequence of float
        Fraction of the surrounding neuropil's light seen through each cell
        (1: the cell adds to a full neuropil; below 1 the cell body displaces
        some of it), one value or one per cell, in [0, 1]. Saved in the truth.
    neuropil_events : float
        Rate (events/s) of transients of the neuropil's own (1-s decay,
        amplitude ``neuropil_dff`` × U(0.5, 1.5)), at times unrelated to the
        stimulus; 0 for none. Drawn from a stream of their own: the rest of
        the movie is the same as without them.
    bleach : float
        Fraction of fluorescence lost by the last frame (exponential).
    motion_sd : float
        Standard deviation of the frame-to-frame rigid jitter (pixels).
    motion_max : float
        Largest shift along each axis (pixels); a slow drift reaches half of it.
    read_noise : float
        Read noise (counts, Gaussian sd).
    offset : float
        Camera offset (counts).
    noise : bool
        If False, no shot or read noise (the expected counts, rounded).
    chunk : int
        Frames generated per chunk.
    seed : int
        Seed of every random choice: same seed, same bytes.
    calibration : RatioCalibration, optional
        Write a ratiometric recording: two channels (ImageJ ``TCYX``), the
        numerator and denominator of the calibration's ratio. ``model`` must
        carry the numerator channel's indicator
        (``dye.indicator(calibration, channel=0)``); ``brightness`` is the
        denominator channel's resting brightness and the numerator's is that
        times the resting ratio, so that background-free ROI means give the
        calibrated ratio. The neuropil is a background of its own in each
        channel (the numerator's half as bright). The truth adds ``F`` per
        channel (``F_channels``), the true ``ratio`` and the calibration.
    neuropil_dye : bool
        Ratiometric only: the neuropil holds the same dye as the cells (as
        after bath loading of an AM ester), so its channels move apart with
        its calcium (for Fura-2, 340 nm up and 380 nm down) instead of
        brightening together. Its numerator-channel ΔF/F is the one described
        under ``neuropil_dff``; the denominator's follows from the dye's bound
        fraction at the cells' mean resting calcium.

    Returns
    -------
    MoviePaths
        Paths of the four files written.
    """
    path = Path(path)
    if n_cells < 1 or n_frames < 2 or chunk < 1:
        raise ValueError("n_cells ≥ 1, n_frames ≥ 2 and chunk ≥ 1 are required")
    check_positive("frame_rate", frame_rate)
    check_positive("cell_radius", cell_radius)
    if neuropil_dye and calibration is None:
        raise ValueError("neuropil_dye needs a ratiometric movie (calibration=)")
    rng = np.random.default_rng(seed)
    time = np.arange(n_frames) / frame_rate
    stimulus.check_within(0.0, float(time[-1]))

    centres = _place_cells(n_cells, shape, cell_radius, rng)
    foot = _footprints(centres, shape, cell_radius)
    masks = foot >= 0.5
    labels = np.zeros(shape, np.uint16)
    for i in range(n_cells):
        labels[masks[i]] = i + 1

    base = model.values(params)
    scale = rng.uniform(1 - amplitude_spread, 1 + amplitude_spread, n_cells)
    if cell_params is not None:
        if len(cell_params) != n_cells:
            raise ValueError(f"cell_params has {len(cell_params)} entries for {n_cells} cells")
        per_cell = [model.values({**base, **p}) for p in cell_params]
    else:
        per_cell = []
        for s in scale:
            p = dict(base)
            if "influx_amplitude" in p:
                p["influx_amplitude"] = base["influx_amplitude"] * float(s)
            per_cell.append(p)
    ratios = np.broadcast_to(np.asarray(neuropil_ratio, dtype=float), (n_cells,)).copy()
    if not np.all((ratios >= 0) & (ratios <= 1)):
        raise ValueError(f"neuropil_ratio = {neuropil_ratio!r} must lie in [0, 1]")
    check_positive("neuropil_events", neuropil_events, allow_zero=True)
    check_positive("offset", offset, allow_zero=True)
    check_positive("read_noise", read_noise, allow_zero=True)
    sims = [model.simulate(p, time, stimulus) for p in per_cell]
    dff = np.stack([s.dff.values for s in sims])
    ca = np.stack([s.ca.values for s in sims])
    # per channel: ΔF/F and resting brightness relative to `brightness`
    if calibration is None:
        channel_dff, channel_level, np_level = [dff], np.ones((1, n_cells)), [1.0]
    else:
        rf_num, rf_den = calibration.channel_ranges()
        if not np.isclose(model.indicator.rf, rf_num):
            raise ValueError(
                f"model indicator R_f {model.indicator.rf:g} is not the calibration's numerator "
                f"channel range {rf_num:g}: build it with dye.indicator(calibration, channel=0)"
            )
        # bound fraction from the numerator's ΔF/F: F/F_min = 1 + (R_f − 1)·f
        c_rest = np.array([p["c_rest"] for p in per_cell])[:, None]
        x0 = (c_rest / model.indicator.kd) ** model.indicator.hill
        f0 = x0 / (1.0 + x0)
        f = f0 + dff * (1.0 + (rf_num - 1.0) * f0) / (rf_num - 1.0)
        dff_den = (rf_den - 1.0) * (f - f0) / (1.0 + (rf_den - 1.0) * f0)
        channel_dff = [dff, dff_den]
        channel_level = np.stack([calibration.to_ratio(c_rest[:, 0]), np.ones(n_cells)])
        np_level = [0.5, 1.0]
    n_ch = len(channel_dff)

    # neuropil: smooth spatial profile, activity = low-passed mean cell activity
    np_profile = ndimage.gaussian_filter(rng.uniform(0.6, 1.4, shape), sigma=min(shape) / 6)
    np_profile *= neuropil_brightness / np_profile.mean()
    np_dff = neuropil_dff * ndimage.gaussian_filter1d(dff.mean(axis=0), sigma=frame_rate * 0.5)
    if neuropil_events > 0:
        own = np.random.default_rng([seed, 7])  # its own stream: the rest is unchanged
        n_ev = own.poisson(neuropil_events * (time[-1] - time[0]))
        kernel = np.exp(-np.arange(int(5 * frame_rate)) / frame_rate)
        impulses = np.zeros(n_frames)
        idx = own.integers(0, n_frames, n_ev)
        np.add.at(impulses, idx, neuropil_dff * own.uniform(0.5, 1.5, n_ev))
        np_dff = np_dff + np.convolve(impulses, kernel)[:n_frames]
    np_channel_dff = [np_dff] * n_ch
    if neuropil_dye:
        # the same bound-fraction map as the cells', at their mean resting calcium
        f0n = float(np.mean(f0))
        fn = f0n + np_dff * (1.0 + (rf_num - 1.0) * f0n) / (rf_num - 1.0)
        fn = np.clip(fn, 0.0, 1.0)
        np_dff = (rf_num - 1.0) * (fn - f0n) / (1.0 + (rf_num - 1.0) * f0n)
        np_channel_dff = [np_dff, (rf_den - 1.0) * (fn - f0n) / (1.0 + (rf_den - 1.0) * f0n)]
    if np.any(ratios != 1.0):
        # a cell displaces the neuropil under it: scale it there to the cell's ratio
        occlusion = np.clip(1.0 - np.einsum("c,cyx->yx", 1.0 - ratios, foot), 0.0, 1.0)
        np_image = np_profile * occlusion
    else:
        np_image = np_profile
    bleach_curve = (1.0 - bleach) ** (time / time[-1])
    # rigid motion: frame-to-frame jitter around a slow drift that starts at zero
    jitter = rng.normal(0.0, motion_sd, size=(n_frames, 2))
    drift_xy = np.stack([_drift_curve(time, motion_max / 2, rng) for _ in range(2)], axis=1)
    shifts = np.clip(jitter + drift_xy, -motion_max, motion_max)
    cell_brightness = brightness * rng.uniform(0.7, 1.3, n_cells)

    # ground-truth traces: mask-mean cell F (own footprint only) and neuropil under each mask
    foot_mean = np.array([foot[i][masks[i]].mean() for i in range(n_cells)])
    channel_F = np.stack([
        (cell_brightness * foot_mean * channel_level[k])[:, None]
        * (1.0 + channel_dff[k]) * bleach_curve
        for k in range(n_ch)
    ])  # fmt: skip
    cell_F = channel_F[0]
    np_under = np.array([np_image[m].mean() for m in masks])
    np_F = np_under[:, None] * (1.0 + np_dff)[None, :] * bleach_curve

    def frames() -> Iterator[np.ndarray]:
        for a in range(0, n_frames, chunk):
            b = min(a + chunk, n_frames)
            clean = np.empty((n_ch, b - a, *shape))
            for k in range(n_ch):
                act = (cell_brightness * channel_level[k])[:, None] * (1.0 + channel_dff[k][:, a:b])
                clean[k] = np.einsum("ct,cyx->tyx", act, foot)
                np_act = 1.0 + np_channel_dff[k][a:b]
                clean[k] += np_level[k] * np_image[None] * np_act[:, None, None]
            clean *= bleach_curve[None, a:b, None, None]
            for j in range(b - a):
                for k in range(n_ch):
                    moved = np.fft.ifft2(
                        ndimage.fourier_shift(np.fft.fft2(clean[k, j]), shifts[a + j])
                    ).real
                    yield camera_counts(
                        moved, rng if noise else None, offset=offset, read_noise=read_noise
                    )

    stem = path.with_suffix("")
    out = MoviePaths(
        movie=path,
        truth=Path(f"{stem}_truth.nc"),
        rois=Path(f"{stem}_rois.tif"),
        stimulus=Path(f"{stem}_stimulus.csv"),
    )
    _atomic_tiff(
        out.movie,
        frames(),
        shape=(n_frames, n_ch, *shape) if n_ch > 1 else (n_frames, *shape),
        dtype=np.uint16,
        metadata={
            "axes": "TCYX" if n_ch > 1 else "TYX",
            "finterval": 1.0 / frame_rate,
            "unit": "pixel",
        },
    )
    _atomic_tiff(out.rois, labels, metadata={"axes": "YX"})
    stimulus.to_csv(out.stimulus)

    truth = xr.Dataset(
        {
            "dff": (("cell", "time"), dff, {"long_name": "true ΔF/F of each cell"}),
            "ca": (("cell", "time"), ca, {"units": "µM", "long_name": "free cytosolic calcium"}),
            "F": (
                ("cell", "time"),
                cell_F,
                {
                    "units": "photons/frame",
                    "long_name": "cell fluorescence, mask mean, no neuropil",
                },
            ),
            "F_neuropil": (
                ("cell", "time"),
                np_F,
                {"units": "photons/frame", "long_name": "neuropil under each mask"},
            ),
            "neuropil_dff": ("time", np_dff),
            "bleach": ("time", bleach_curve, {"long_name": "multiplicative bleaching"}),
            "shifts": (
                ("time", "axis"),
                shifts,
                {"units": "pixel", "long_name": "rigid displacement (y, x) of frame content"},
            ),
            "footprints": (("cell", "y", "x"), foot),
            "masks": (("cell", "y", "x"), masks.astype(np.uint8), {"long_name": "footprint ≥ 0.5"}),
            "centroids": (("cell", "axis"), centres, {"units": "pixel"}),
            "influx_amplitude": (
                "cell",
                [p.get("influx_amplitude", np.nan) for p in per_cell],
                {"units": "µM"},
            ),
            "neuropil_ratio": (
                "cell",
                ratios,
                {"long_name": "fraction of the surrounding neuropil seen through the cell"},
            ),
        },
        coords={
            "time": ("time", time, {"units": "s"}),
            "axis": ["y", "x"],
            "cell": np.arange(n_cells),
        },
        attrs={
            "model": model.name,
            "indicator": model.indicator.name,
            "parameters": json.dumps(per_cell),
            "events": json.dumps(stimulus.events.tolist()),
            "event_weights": json.dumps(stimulus.event_weights.tolist()),
            "frame_rate": frame_rate,
            "offset": offset,
            "read_noise": read_noise,
            "seed": seed,
            "movie": out.movie.name,
        },
    )
    if calibration is not None:
        truth["F_channels"] = (
            ("channel", "cell", "time"),
            channel_F,
            {"units": "photons/frame", "long_name": "cell fluorescence per channel, mask mean"},
        )
        truth["ratio"] = (
            ("cell", "time"),
            calibration.to_ratio(ca),
            {"long_name": "numerator/denominator of the background-free cell"},
        )
        truth = truth.assign_coords(channel=["numerator", "denominator"])
        truth.attrs["calibration"] = json.dumps(dataclasses.asdict(calibration))
    with atomic_path(out.truth) as tmp:
        truth.to_netcdf(tmp, engine="h5netcdf")
    return out


def camera_counts(
    photons: ArrayLike,
    rng: np.random.Generator | None,
    *,
    offset: float = 100.0,
    read_noise: float = 3.0,
) -> np.ndarray:
    """What a camera reads for an image of expected photon counts.

    Poisson shot noise on the photons (negative expectations, ringing of a
    sub-pixel shift, read as 0) plus Gaussian read noise about the camera's
    offset, rounded and clipped to ``uint16``: the camera model of
    :func:`simulate_movie`, drawn in its order (all shot noise, then all
    read noise), so that a frame drawn again from the same generator state
    is the same frame.

    Parameters
    ----------
    photons : array_like
        Expected photons per pixel (photons/frame), any shape.
    rng : numpy.random.Generator or None
        Source of the noise; None for the noise-free reading
        (``photons + offset``, rounded).
    offset : float
        Camera offset (counts): what a pixel reads with no light.
    read_noise : float
        Sd of the read noise (counts).

    Returns
    -------
    numpy.ndarray
        ``uint16`` counts, the shape of ``photons``.
    """
    check_positive("offset", offset, allow_zero=True)
    check_positive("read_noise", read_noise, allow_zero=True)
    expected = np.maximum(np.asarray(photons, dtype=float), 0.0)
    if rng is None:
        counts = expected + offset
    else:
        counts = rng.poisson(expected) + rng.normal(offset, read_noise, expected.shape)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


def _atomic_tiff(path: Path, data: Any, **kwargs: Any) -> None:
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, imagej=True, **kwargs)
