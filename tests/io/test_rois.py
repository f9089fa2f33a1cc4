import numpy as np
import pytest
import roifile
import tifffile

from cainfer.io import masks_from_labels, read_rois, write_rois


@pytest.fixture
def masks():
    m = np.zeros((5, 40, 50), bool)
    yy, xx = np.mgrid[0:40, 0:50]
    m[0] = (yy - 10) ** 2 + (xx - 12) ** 2 <= 16  # disc
    m[1, 0:4, 40:50] = True  # touching two borders
    m[2, 25:35, 0:3] = True  # an L touching the left border
    m[2, 31:34, 3:9] = True
    m[3, 20:24, 20:24] = True  # touching ROI 4 (no overlap)
    m[4, 20:24, 24:30] = True
    return m


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".zip"])
def test_every_format_round_trips(tmp_path, masks, suffix):
    path = write_rois(masks, tmp_path / f"rois{suffix}")
    back = read_rois(path, shape=(40, 50))
    assert back.dtype == bool
    np.testing.assert_array_equal(back, masks)
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


def test_label_image_and_mask_stack_from_tiff(tmp_path, masks):
    labels = np.zeros((40, 50), np.uint16)
    for i, m in enumerate(masks):
        labels[m] = 10 * (i + 1)  # label values need not be consecutive
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    np.testing.assert_array_equal(read_rois(tmp_path / "labels.tif"), masks)
    tifffile.imwrite(tmp_path / "stack.tif", masks.astype(np.uint8))
    np.testing.assert_array_equal(read_rois(tmp_path / "stack.tif"), masks)


def test_overlapping_masks_survive_as_npy(tmp_path, masks):
    m = masks.copy()
    m[4, 20:24, 22:24] = True  # overlaps ROI 3
    np.testing.assert_array_equal(read_rois(write_rois(m, tmp_path / "o.npy")), m)
    with pytest.raises(ValueError, match="overlap"):
        write_rois(m, tmp_path / "o.tif")


def test_imagej_rectangle_oval_and_polygon(tmp_path):
    rect = roifile.ImagejRoi(roitype=roifile.ROI_TYPE.RECT, top=2, left=3, bottom=6, right=10)
    oval = roifile.ImagejRoi(roitype=roifile.ROI_TYPE.OVAL, top=10, left=10, bottom=20, right=20)
    poly = roifile.ImagejRoi.frompoints(np.array([[30.0, 2.0], [40.0, 2.0], [40.0, 12.0]]))
    poly.roitype = roifile.ROI_TYPE.POLYGON
    roifile.roiwrite(tmp_path / "set.zip", [rect, oval, poly])
    m = read_rois(tmp_path / "set.zip", shape=(40, 50))
    expected_rect = np.zeros((40, 50), bool)
    expected_rect[2:6, 3:10] = True
    np.testing.assert_array_equal(m[0], expected_rect)
    assert m[1].sum() == pytest.approx(np.pi * 25, rel=0.1)
    assert m[1][15, 15] and not m[1][10, 10]
    # triangle (30,2)-(40,2)-(40,12): the pixel at x=39, y=3 is inside, x=31, y=10 is not
    assert m[2][3, 39] and not m[2][10, 31]


def test_bad_roi_files(tmp_path, masks):
    with pytest.raises(ValueError, match=r"x\.json: unknown ROI format"):
        (tmp_path / "x.json").write_text("{}")
        read_rois(tmp_path / "x.json")
    with pytest.raises(ValueError, match="no such ROI file"):
        read_rois(tmp_path / "nope.npy")
    empty = masks.copy()
    empty[2] = False
    np.save(tmp_path / "e.npy", empty)
    with pytest.raises(ValueError, match=r"e\.npy: ROI\(s\) \[2\] are empty"):
        read_rois(tmp_path / "e.npy")
    np.save(tmp_path / "z.npy", np.zeros((10, 10), np.int32))
    with pytest.raises(ValueError, match="holds no ROI"):
        read_rois(tmp_path / "z.npy")
    write_rois(masks, tmp_path / "r.zip")
    with pytest.raises(ValueError, match="need the frame shape"):
        read_rois(tmp_path / "r.zip")
    np.save(tmp_path / "m.npy", masks)
    with pytest.raises(ValueError, match=r"are \(40, 50\) pixels but frames are \(30, 30\)"):
        read_rois(tmp_path / "m.npy", shape=(30, 30))
    hole = np.zeros((1, 10, 10), bool)
    hole[0, 2:7, 2:7] = True
    hole[0, 4, 4] = False
    with pytest.raises(ValueError, match="ROI 0 is not a single simply connected region"):
        write_rois(hole, tmp_path / "h.zip")


def test_masks_from_labels_rejects_non_integer():
    with pytest.raises(ValueError, match="2-D integer"):
        masks_from_labels(np.zeros((4, 4)))
