import numpy as np
import pytest
import tifffile

from cainfer.io import MovieError, load_movie, movie_files, natural_key


@pytest.fixture
def frames(rng):
    return rng.integers(0, 4000, size=(37, 24, 20), dtype=np.uint16)


def test_multipage_tiff_with_frame_rate_from_user(tmp_path, frames):
    tifffile.imwrite(tmp_path / "m.tif", frames)
    mv = load_movie(tmp_path / "m.tif", frame_rate=15.0)
    assert mv.shape == frames.shape and mv.dtype == np.uint16 and mv.frame_rate == 15.0
    np.testing.assert_array_equal(mv.read(0, len(mv)), frames)
    np.testing.assert_allclose(mv.time, np.arange(37) / 15.0)


def test_chunks_cover_the_movie_in_order(tmp_path, frames):
    tifffile.imwrite(tmp_path / "m.tif", frames, compression="zlib")  # page-by-page path
    mv = load_movie(tmp_path / "m.tif", frame_rate=10.0)
    got = list(mv.iter_chunks(8))
    assert [a for a, _ in got] == [0, 8, 16, 24, 32]
    np.testing.assert_array_equal(np.concatenate([c for _, c in got]), frames)
    mv.close()


def test_imagej_hyperstack_channel_and_frame_interval(tmp_path, frames):
    data = np.stack([frames, frames + 1], axis=1)  # TCYX
    tifffile.imwrite(
        tmp_path / "h.tif", data, imagej=True, metadata={"axes": "TCYX", "finterval": 0.04}
    )
    mv = load_movie(tmp_path / "h.tif", channel=1)
    assert mv.frame_rate == pytest.approx(25.0)
    np.testing.assert_array_equal(mv.read(0, 37), frames + 1)
    with pytest.raises(MovieError, match=r"has 2 channels; choose one with channel=0\.\.1"):
        load_movie(tmp_path / "h.tif")
    with pytest.raises(MovieError, match=r"h\.tif: unknown channel 2"):
        load_movie(tmp_path / "h.tif", channel=2)


def test_imagej_file_with_a_single_header_finds_every_frame(tmp_path, frames):
    # ImageJ writes files over 4 GB with one IFD and contiguous data: the same layout
    tifffile.imwrite(
        tmp_path / "big.tif",
        frames,
        imagej=True,
        truncate=True,
        metadata={"axes": "TYX", "finterval": 0.1},
    )
    with tifffile.TiffFile(tmp_path / "big.tif") as tf:
        assert len(tf.pages) == 1
    mv = load_movie(tmp_path / "big.tif")
    assert len(mv) == 37
    np.testing.assert_array_equal(mv.read(30, 37), frames[30:])


def test_bigtiff_and_ome(tmp_path, frames):
    tifffile.imwrite(tmp_path / "b.tif", frames, bigtiff=True)
    np.testing.assert_array_equal(load_movie(tmp_path / "b.tif", frame_rate=5).read(0, 37), frames)
    tifffile.imwrite(
        tmp_path / "o.ome.tif",
        frames,
        ome=True,
        metadata={"axes": "TYX", "TimeIncrement": 50.0, "TimeIncrementUnit": "ms"},
    )
    mv = load_movie(tmp_path / "o.ome.tif")
    assert mv.frame_rate == pytest.approx(20.0)
    np.testing.assert_array_equal(mv.read(0, 37), frames)


def test_folder_in_natural_order_and_list(tmp_path, frames):
    parts = {"rec_2.tif": frames[10:20], "rec_10.tif": frames[20:], "rec_1.tif": frames[:10]}
    for name, d in parts.items():
        tifffile.imwrite(
            tmp_path / name, d, imagej=True, metadata={"axes": "TYX", "finterval": 0.05}
        )
    mv = load_movie(tmp_path)
    assert [f.name for f in mv.files] == ["rec_1.tif", "rec_2.tif", "rec_10.tif"]
    np.testing.assert_array_equal(mv.read(0, 37), frames)
    np.testing.assert_array_equal(mv.read(5, 25), frames[5:25])  # across file boundaries
    listed = load_movie([tmp_path / "rec_1.tif", tmp_path / "rec_2.tif"])
    assert len(listed) == 20
    assert sorted(["f10", "f2", "F1"], key=natural_key) == ["F1", "f2", "f10"]


def test_bad_inputs_name_the_file(tmp_path, frames):
    (tmp_path / "notes.tif").write_text("hello")
    with pytest.raises(MovieError, match=r"notes\.tif: not a TIFF file"):
        load_movie(tmp_path / "notes.tif", frame_rate=1)
    tifffile.imwrite(tmp_path / "one.tif", frames[0])
    with pytest.raises(MovieError, match=r"one\.tif: a single 2-D image"):
        load_movie(tmp_path / "one.tif", frame_rate=1)
    tifffile.imwrite(tmp_path / "a.tif", frames)
    tifffile.imwrite(tmp_path / "b.tif", frames[:, :10])
    with pytest.raises(MovieError, match=r"b\.tif: frames are \(10, 20\)"):
        load_movie([tmp_path / "a.tif", tmp_path / "b.tif"], frame_rate=1)
    with pytest.raises(MovieError, match=r"a\.tif: no frame rate"):
        load_movie(tmp_path / "a.tif")
    with pytest.raises(MovieError, match="no such file"):
        load_movie(tmp_path / "missing.tif", frame_rate=1)
    with pytest.raises(MovieError, match="frame_rate"):
        load_movie(tmp_path / "a.tif", frame_rate=-3)


def test_truncated_files_are_reported(tmp_path, frames):
    tifffile.imwrite(
        tmp_path / "t.tif",
        frames,
        imagej=True,
        truncate=True,
        metadata={"axes": "TYX", "finterval": 0.1},
    )
    raw = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MovieError, match=r"t\.tif: truncated"):
        load_movie(tmp_path / "t.tif")
    tifffile.imwrite(tmp_path / "c.tif", frames, compression="zlib")
    raw = (tmp_path / "c.tif").read_bytes()
    (tmp_path / "c.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MovieError, match=r"c\.tif"):
        mv = load_movie(tmp_path / "c.tif", frame_rate=1)
        mv.read(0, len(mv))


# ---------------------------------------------------------------- every frame, or a refusal


def test_singleton_axes_keep_every_frame(tmp_path, frames):
    # (37, 1, y, x) without axis names: tifffile reports two 'Q' axes
    tifffile.imwrite(tmp_path / "s.tif", frames[:, None])
    with tifffile.TiffFile(tmp_path / "s.tif") as tf:
        assert tf.series[0].axes == "QQYX"
    mv = load_movie(tmp_path / "s.tif", frame_rate=5)
    assert len(mv) == 37
    np.testing.assert_array_equal(mv.read(0, 37), frames)
    # a singleton axis before the channel axis does not make the channels outermost
    data = np.stack([frames, frames + 7], axis=1)[None]  # (1, T, C, Y, X) as ZTCYX
    tifffile.imwrite(tmp_path / "z.tif", data, metadata={"axes": "ZTCYX"}, compression="zlib")
    mv = load_movie(tmp_path / "z.tif", frame_rate=5, channel=1)
    np.testing.assert_array_equal(mv.read(0, 37), frames + 7)


def test_two_long_unnamed_axes_are_refused_not_cut(tmp_path, frames):
    data = frames[:36].reshape(6, 6, 24, 20)  # written without axis names: QQYX
    tifffile.imwrite(tmp_path / "qq.tif", data)
    with pytest.raises(MovieError, match=r"qq\.tif: axes QQYX .*more than one non-channel axis"):
        load_movie(tmp_path / "qq.tif", frame_rate=5)


def test_every_image_series_of_a_file_is_read(tmp_path, frames):
    with tifffile.TiffWriter(tmp_path / "ms.tif") as w:
        w.write(frames[:20])
        w.write(frames[20:], compression="zlib")  # the second part page by page
    with tifffile.TiffFile(tmp_path / "ms.tif") as tf:
        assert len(tf.series) == 2
    mv = load_movie(tmp_path / "ms.tif", frame_rate=5)
    assert len(mv) == 37 and mv.files == (tmp_path / "ms.tif",)
    np.testing.assert_array_equal(mv.read(0, 37), frames)
    np.testing.assert_array_equal(mv.read(15, 25), frames[15:25])
    mv.close()


def test_a_series_that_is_not_frames_is_named(tmp_path, frames):
    with tifffile.TiffWriter(tmp_path / "th.tif") as w:
        w.write(frames)
        w.write(frames[0, :8, :8])  # a thumbnail
    with pytest.warns(UserWarning, match=r"th\.tif: image series 1 .*is not read"):
        mv = load_movie(tmp_path / "th.tif", frame_rate=5)
    assert len(mv) == 37


def test_several_ome_images_are_refused(tmp_path, frames):
    with tifffile.TiffWriter(tmp_path / "o.ome.tif", ome=True) as w:
        w.write(frames[:20], metadata={"axes": "TYX"})
        w.write(frames[20:], metadata={"axes": "TYX"})
    with pytest.raises(MovieError, match=r"o\.ome\.tif: holds 2 OME images"):
        load_movie(tmp_path / "o.ome.tif", frame_rate=5)


@pytest.mark.parametrize(
    ("tunit", "finterval", "rate"),
    [("ms", 33.333, 1 / 0.033333), ("s", 0.05, 20.0), ("sec", 0.05, 20.0), ("min", 0.5, 1 / 30),
     ("\\u00B5s", 40000.0, 25.0)],  # ImageJ escapes µ in its header
)  # fmt: skip
def test_imagej_time_unit_is_applied(tmp_path, frames, tunit, finterval, rate):
    md = {"axes": "TYX", "finterval": finterval, "tunit": tunit}
    tifffile.imwrite(tmp_path / "u.tif", frames, imagej=True, metadata=md)
    assert load_movie(tmp_path / "u.tif").frame_rate == pytest.approx(rate, rel=1e-9)


def test_unknown_time_unit_is_refused_unless_a_rate_is_given(tmp_path, frames):
    md = {"axes": "TYX", "finterval": 2.0, "tunit": "fortnight"}
    tifffile.imwrite(tmp_path / "u.tif", frames, imagej=True, metadata=md)
    with pytest.raises(MovieError, match=r"u\.tif: .*tunit = 'fortnight' is not known"):
        load_movie(tmp_path / "u.tif")
    assert load_movie(tmp_path / "u.tif", frame_rate=7).frame_rate == 7


def test_folder_files_are_the_files_read(tmp_path, frames):
    for name, part in (("a.tif", frames[:10]), ("b.TIFF", frames[10:20]), ("c.btf", frames[20:])):
        tifffile.imwrite(tmp_path / name, part, bigtiff=name.endswith(".btf"))
    (tmp_path / "notes.txt").write_text("x")
    files = movie_files(tmp_path)
    assert [f.name for f in files] == ["a.tif", "b.TIFF", "c.btf"]
    mv = load_movie(tmp_path, frame_rate=5)
    assert list(mv.files) == files and len(mv) == 37
