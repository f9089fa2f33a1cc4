import numpy as np
import pytest

from cainfer.extract import (
    SummaryAccumulator,
    detect_rois,
    neuropil_masks,
    register_frames,
    shift_frame,
)


def test_correlation_image_known_answer(rng):
    T = 500
    common = rng.normal(size=T)
    x = rng.normal(size=(T, 6, 7))
    x[:, 2:4, 2:4] = common[:, None, None]  # a 2x2 block moving as one
    acc = SummaryAccumulator((6, 7))
    for a in range(0, T, 128):  # chunking must not matter
        acc.add(x[a : a + 128] + 1000.0)
    corr = acc.correlation_image()
    # pixel (2,2) has 8 neighbours, 3 of them inside the block
    assert corr[2, 2] == pytest.approx(3 / 8, abs=0.05)
    assert abs(corr[0, 6]) < 0.15
    np.testing.assert_allclose(acc.mean_image(), x.mean(axis=0) + 1000.0, atol=1e-9)


def test_registration_recovers_a_known_shift(rng):
    yy, xx = np.mgrid[0:64, 0:64]
    ref = np.exp(-((yy - 30) ** 2 + (xx - 25) ** 2) / 20.0) + np.exp(
        -((yy - 12) ** 2 + (xx - 44) ** 2) / 8.0
    )
    from scipy import ndimage

    moved = np.stack([ndimage.shift(ref, s, order=3) for s in [(1.3, -0.7), (-2.25, 0.4)]])
    disp = register_frames(moved, ref, upsample=50)
    np.testing.assert_allclose(disp, [(1.3, -0.7), (-2.25, 0.4)], atol=0.03)
    back = shift_frame(moved[0], disp[0], order=3)
    assert np.abs(back - ref)[10:-10, 10:-10].max() < 0.02


def test_a_cell_brightening_many_fold_does_not_pull_the_registration_onto_its_neighbour():
    """A frame whose one cell is 20x brighter matches the reference best with that cell
    laid over the other one (the unbounded correlation peak, 30 px away); the search
    within a tenth of the frame finds the true shift."""
    from scipy import ndimage
    from skimage.registration import phase_cross_correlation

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:64, 0:64]

    def blob(cy: float, cx: float) -> np.ndarray:
        return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5**2))

    texture = 10 * ndimage.gaussian_filter(rng.normal(size=(64, 64)), 1.5)
    ref = 100 + texture + 50 * blob(20, 20) + 80 * blob(40, 44)
    true = (0.6, -0.4)
    frame = ndimage.shift(ref + 1000 * blob(20, 20), true, order=3) + rng.normal(0, 1, ref.shape)
    unbounded, _, _ = phase_cross_correlation(ref, frame, upsample_factor=20, normalization=None)
    assert np.abs(unbounded).max() > 6.4  # the case this guards against does occur
    with pytest.warns(UserWarning, match=r"1 frame\(s\) matched .* beyond max_shift = 6.4 px"):
        disp = register_frames(frame[None], ref)
    # the bounded peak is refined by a parabola (coarser than skimage's upsampled DFT)
    np.testing.assert_allclose(disp[0], true, atol=0.25)
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="max_shift"):
            register_frames(frame[None], ref, max_shift=bad)


def test_neuropil_annulus_excludes_rois_and_reaches_min_pixels():
    m = np.zeros((2, 60, 60), bool)
    m[0, 20:26, 20:26] = True
    m[1, 20:26, 28:34] = True  # close neighbour
    ann = neuropil_masks(m, inner=2, min_pixels=80)
    assert (ann.sum(axis=(1, 2)) >= 80).all()
    from scipy import ndimage

    near = ndimage.distance_transform_edt(~m.any(axis=0)) <= 2
    assert not (ann & near).any()
    with pytest.raises(ValueError, match="ROI 0 holds"):
        neuropil_masks(m, inner=2, min_pixels=5000, max_radius=10)


def test_detect_rois_on_a_clean_correlation_image():
    yy, xx = np.mgrid[0:80, 0:80]
    centres = [(15, 15), (15, 50), (50, 30), (65, 65)]
    corr = np.zeros((80, 80))
    for cy, cx in centres:
        corr += 0.8 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
    masks = detect_rois(corr, min_area=10, max_area=300)
    assert len(masks) == 4
    got = sorted(tuple(np.round(np.argwhere(m).mean(axis=0))) for m in masks)
    assert got == sorted((float(a), float(b)) for a, b in centres)
    with pytest.raises(ValueError, match="no ROI of 500-600 pixels"):
        detect_rois(corr, min_area=500, max_area=600)


def test_sampling_at_displaced_pixels_equals_shifting_whole_frames(rng):
    from cainfer.extract.summary import MeanAccumulator
    from cainfer.extract.traces import _sample

    frames = rng.integers(0, 1000, size=(6, 20, 24)).astype(np.uint16)
    disp = rng.uniform(-2.5, 2.5, size=(6, 2))
    disp[0] = (0.0, 0.0)
    disp[1] = (1.0, -2.0)  # integer
    ys, xs = np.nonzero(np.ones((20, 24), bool))  # every pixel, borders included
    # traces: cubic spline, as scipy.ndimage.shift(order=3, mode="nearest") of the frame
    cubic = np.stack([shift_frame(f, d, order=3) for f, d in zip(frames, disp, strict=True)])
    np.testing.assert_allclose(_sample(frames, disp, ys, xs), cubic.reshape(6, -1), atol=1e-6)
    np.testing.assert_allclose(_sample(frames, None, ys, xs), frames.reshape(6, -1))
    # the mean image: bilinear
    bilinear = np.stack([shift_frame(f, d) for f, d in zip(frames, disp, strict=True)])
    acc = MeanAccumulator((20, 24))
    acc.add(frames[:4], disp[:4])
    acc.add(frames[4:], disp[4:])
    np.testing.assert_allclose(acc.mean(), bilinear.mean(axis=0), atol=1e-9)


def test_registered_cell_keeps_its_brightness_at_any_subpixel_shift():
    """A smooth cell moved by a fraction of a pixel and moved back keeps its mask mean.

    Bilinear interpolation blurs by an amount that depends on the fraction
    (none at whole pixels, most at half): the mask mean of a cell of radius
    ~4 px then varies by about 1 % from frame to frame, noise proportional to
    the cell's brightness. The cubic spline the traces use keeps it within 0.1 %.
    """
    from scipy import ndimage

    from cainfer.extract.traces import _sample

    yy, xx = np.mgrid[:40, :40]
    cell = 1000.0 * np.exp(-((yy - 20.0) ** 2 + (xx - 19.0) ** 2) / (2 * 2.5**2))
    mask = cell >= 500.0
    ys, xs = np.nonzero(mask)
    truth = cell[mask].mean()
    spreads = {}
    for order in (1, 3):
        means = []
        for frac in np.linspace(0.0, 0.5, 6):
            d = np.array([frac, -0.7 * frac])
            moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(cell), d)).real
            if order == 3:
                means.append(_sample(moved[None], d[None], ys, xs).mean())
            else:
                means.append(shift_frame(moved, d, order=1)[mask].mean())
        spreads[order] = np.max(np.abs(np.array(means) / truth - 1.0))
    assert spreads[3] < 1e-3, spreads
    assert spreads[1] > 5e-3, spreads  # what the spline avoids
