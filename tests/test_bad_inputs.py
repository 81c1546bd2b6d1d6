"""A corpus of bad inputs across the pipeline: each gives exit code 2, one line naming the file
(or key) and the problem, leaves nothing half-written, and never changes the input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from grunet.checkpoint import save_checkpoint
from grunet.cli import main
from grunet.io import read_image
from grunet.model import SMALL, GRUUNet


def digest(path: Path) -> str:
    if path.is_dir():
        return "|".join(digest(p) for p in sorted(path.rglob("*")) if p.is_file())
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def good_image(path: Path, shape=(64, 64)) -> Path:
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, (rng.random(shape) * 255).astype(np.uint8))
    return path


def make_truncated(d: Path) -> Path:
    data = good_image(d / "whole.tif").read_bytes()
    (d / "whole.tif").unlink()
    (d / "truncated.tif").write_bytes(data[: len(data) // 2])
    return d / "truncated.tif"


def make_garbage(d: Path) -> Path:
    (d / "garbage.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    return d / "garbage.tif"


def make_zero_byte(d: Path) -> Path:
    (d / "zero.tif").write_bytes(b"")
    return d / "zero.tif"


def make_npy(name: str, array: np.ndarray):
    def make(d: Path) -> Path:
        np.save(d / name, array)
        return d / name

    return make


def make_tiff(name: str, array: np.ndarray):
    def make(d: Path) -> Path:
        tifffile.imwrite(d / name, array)
        return d / name

    return make


def partly_nan() -> np.ndarray:
    image = np.ones((16, 16), np.float32)
    image[0, :3] = np.nan
    image[1, 1] = np.inf
    return image


def make_directory(d: Path) -> Path:
    (d / "folder").mkdir()
    (d / "folder" / "notes.txt").write_text("not an image")
    return d / "folder"


CONVERT_CASES = {
    "truncated_tiff": (make_truncated, "truncated"),
    "tiff_with_garbage_bytes": (make_garbage, "no image"),
    "zero_byte_file": (make_zero_byte, "empty file"),
    "one_d_array": (make_npy("line.npy", np.arange(10, dtype=np.uint8)), "1-D"),
    "six_d_array": (make_npy("six.npy", np.zeros((2, 2, 2, 2, 8, 8), np.uint8)), "6 axes"),
    "complex_dtype": (make_tiff("complex.tif", np.zeros((8, 8), np.complex64)), "complex64"),
    "bool_dtype": (make_npy("mask.npy", np.zeros((8, 8), bool)), "bool"),
    "all_nan_float": (
        make_tiff("allnan.tif", np.full((16, 16), np.nan, np.float32)),
        "256 of 256 pixel values are NaN",
    ),
    "partly_nan_float": (make_tiff("partnan.tif", partly_nan()), "4 of 256 pixel values"),
    "missing_path": (lambda d: d / "missing.tif", "no such file"),
    "directory_instead_of_file": (make_directory, "is a directory"),
}


def run_cli(args: list[str], capsys) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if "error" in line]


def assert_one_clear_error(code: int, errors: list[str], *names: str, problem: str) -> None:
    assert code == 2
    assert len(errors) == 1, errors
    assert all(name in errors[0] for name in names), errors[0]
    assert problem in errors[0], errors[0]
    assert "Traceback" not in errors[0]


@pytest.mark.parametrize("case", sorted(CONVERT_CASES))
def test_bad_image_gives_one_line_naming_the_file_and_writes_nothing(case, tmp_path, capsys):
    make, problem = CONVERT_CASES[case]
    bad = make(tmp_path)
    before = digest(bad)
    out = tmp_path / "out"
    code, errors = run_cli(["convert", bad, "-o", out], capsys)
    assert_one_clear_error(code, errors, bad.name, problem=problem)
    assert not out.exists() or not any(out.iterdir()), "half-written output left behind"
    assert digest(bad) == before


def test_check_reports_every_bad_file_of_an_experiment_at_once(tmp_path, capsys):
    bad = [make_truncated(tmp_path), make_zero_byte(tmp_path), make_garbage(tmp_path)]
    good = good_image(tmp_path / "fine.tif")
    code = main(["check", *map(str, bad), str(good)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2
    for path in bad:
        assert path.name in text
    assert not any("fine.tif" in line and "error" in line for line in text.splitlines())


def test_constant_image_gives_zero_cells_not_an_error(tmp_path, capsys):
    image = tmp_path / "blank.tif"
    tifffile.imwrite(image, np.full((64, 64), 7, np.uint8))
    assert main(["run", str(image), "-o", str(tmp_path / "out")]) == 0
    counts = (tmp_path / "out" / "counts.csv").read_text().splitlines()
    assert counts[1].split(",")[:3] == ["blank", "0", "0"]


def test_existing_output_is_refused_and_kept(tmp_path, capsys):
    image = good_image(tmp_path / "a.tif")
    assert main(["convert", str(image), "-o", str(tmp_path / "out")]) == 0
    store = tmp_path / "out" / "a.ome.zarr"
    before = digest(store)
    code, errors = run_cli(["convert", image, "-o", tmp_path / "out"], capsys)
    assert_one_clear_error(code, errors, "a.ome.zarr", problem="already exists")
    assert digest(store) == before


@pytest.fixture
def store(tmp_path) -> Path:
    image = good_image(tmp_path / "img.tif")
    assert main(["convert", str(image), "-o", str(tmp_path / "stores")]) == 0
    return tmp_path / "stores" / "img.ome.zarr"


def test_corrupt_checkpoint_is_named(store, tmp_path, capsys):
    checkpoint = tmp_path / "broken.pt"
    checkpoint.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    out = tmp_path / "img.probs.zarr"
    code, errors = run_cli(["predict", store, "-o", out, "--model", checkpoint], capsys)
    assert_one_clear_error(code, errors, "broken.pt", problem="not a readable grunet checkpoint")
    assert not out.exists()


def test_checkpoint_for_other_channel_count_names_both(store, tmp_path, capsys):
    checkpoint = tmp_path / "two_channels.pt"
    save_checkpoint(checkpoint, GRUUNet(SMALL.replace(in_channels=2)))
    out = tmp_path / "img.probs.zarr"
    code, errors = run_cli(["predict", store, "-o", out, "--model", checkpoint], capsys)
    assert_one_clear_error(code, errors, "img.ome.zarr", "two_channels.pt", problem="expects 2")
    assert not out.exists()


def three_channel_image(path: Path) -> Path:
    """An OME-TIFF with channels GFP, Hoechst 33342 (the nuclear stain) and BF."""
    plane = tifffile.imread(good_image(path.with_name("plane.tif")))
    metadata = {"axes": "CYX", "Channel": {"Name": ["GFP", "Hoechst 33342", "BF"]}}
    tifffile.imwrite(path, np.stack([plane, plane // 2, plane // 3]), ome=True, metadata=metadata)
    return path


def test_run_on_a_multichannel_image_names_its_channels_and_writes_nothing(tmp_path, capsys):
    """The shipped model reads one channel: before anything is converted, the error lists the
    image's channels and suggests its nuclear stain as --channels."""
    image = three_channel_image(tmp_path / "cells.ome.tif")
    out = tmp_path / "out"
    code, errors = run_cli(["run", image, "-o", out], capsys)
    assert_one_clear_error(
        code, errors, "cells.ome.tif", "GFP, Hoechst 33342, BF", problem="reads 1"
    )
    assert "--channels 'Hoechst 33342'" in errors[0]
    assert not out.exists() or not any(out.iterdir())
    assert main(["run", str(image), "-o", str(out), "--channels", "Hoechst 33342"]) == 0
    assert (out / "counts.csv").exists()


def test_check_with_a_model_reports_inputs_whose_channels_it_cannot_read(tmp_path, capsys):
    image = three_channel_image(tmp_path / "cells.ome.tif")
    fine = good_image(tmp_path / "fine.tif")
    code = main(["check", str(image), str(fine), "--model", "shipped"])
    out = capsys.readouterr().out
    assert code == 2
    assert "cells.ome.tif: has 3 channels" in out and "--channels 'Hoechst 33342'" in out
    assert "fine.tif" not in out
    assert main(["check", str(image), "--channels", "Hoechst 33342"]) == 0
    assert main(["check", str(image)]) == 0  # without a model: only the file itself is checked


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_grey_image_saved_as_rgb_is_one_channel_the_nuclei_model_reads(suffix, tmp_path):
    """Exports and screenshots often store a grey image as RGB (red = green = blue): it is read
    as one channel, so `grunet run` segments it instead of asking which colour to read."""
    import imageio.v3 as iio

    grey = tifffile.imread(good_image(tmp_path / "plane.tif"))
    path = tmp_path / f"grey.{suffix}"
    iio.imwrite(path, np.dstack([grey, grey, grey]))
    decoded = iio.imread(path)
    assert decoded.shape[-1] == 3 and (decoded[..., 0] == decoded[..., 2]).all()
    stack = read_image(path)
    assert stack.shape == (1, 1, 1, *grey.shape)
    assert (np.asarray(stack.data[0, 0, 0]) == decoded[..., 0]).all()
    assert main(["run", str(path), "-o", str(tmp_path / "out")]) == 0
    colour = decoded.copy()
    colour[0, 0, 1] ^= 1  # one pixel off grey: a colour image, three channels
    iio.imwrite(tmp_path / "colour.png", colour)
    assert read_image(tmp_path / "colour.png").channel_names == ["red", "green", "blue"]


def test_labels_of_a_different_shape_are_refused(tmp_path, capsys):
    pred = good_image(tmp_path / "pred.tif")
    truth = tmp_path / "truth.tif"
    tifffile.imwrite(truth, np.zeros((32, 32), np.uint16))
    code, errors = run_cli(
        ["evaluate", "--pred", pred, "--truth", truth, "-o", tmp_path / "ev"], capsys
    )
    assert_one_clear_error(code, errors, "pred.tif", "truth.tif", problem="shape")
    assert not (tmp_path / "ev").exists()


def test_label_image_with_negative_values_is_refused(tmp_path, capsys):
    labels = tmp_path / "negative.tif"
    tifffile.imwrite(labels, np.full((16, 16), -1, np.int16))
    before = digest(labels)
    code, errors = run_cli(
        ["evaluate", "--pred", labels, "--truth", labels, "-o", tmp_path / "ev"], capsys
    )
    assert_one_clear_error(code, errors, "negative.tif", problem="negative")
    assert digest(labels) == before


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("model:\n  preset: small\nbogus_key: 1\n", "bogus_key"),
        ("model:\n  preset: small\nepochs: many\n", "epochs"),
        ("model: [unclosed\n", "train.yaml"),
    ],
    ids=["unknown_key", "wrong_type", "not_yaml"],
)
def test_bad_training_config_names_the_key(text, key, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(text)
    code, errors = run_cli(["train", "-c", config, "-o", tmp_path / "run"], capsys)
    assert_one_clear_error(code, errors, key, problem="")
    assert not (tmp_path / "run").exists()


def test_binary_file_as_config_is_named(tmp_path, capsys):
    config = good_image(tmp_path / "image_not_config.tif")
    code, errors = run_cli(["train", "-c", config, "-o", tmp_path / "run"], capsys)
    assert_one_clear_error(code, errors, "image_not_config.tif", problem="")


pytestmark = pytest.mark.usefixtures("one_torch_thread")
