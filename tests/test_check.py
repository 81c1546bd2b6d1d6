"""``grunet check``: every bad input reported on its own line before any long run."""

from __future__ import annotations

import hashlib

import numpy as np
import tifffile

from grunet.cli import main


def test_check_reports_every_bad_file_and_exits_2(tmp_path, capsys):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[:-200])
    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((8, 8), np.nan, np.float32))
    missing = tmp_path / "missing.tif"
    paths = [good, empty, cut, nan, missing]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.exists()}
    assert main(["check", *map(str, paths)]) == 2
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 4
    for path, problem in [
        (empty, "empty file"),
        (cut, "truncated"),
        (nan, "64 of 64 pixel values are NaN"),
        (missing, "no such file"),
    ]:
        assert any(line.startswith(f"{path}: ") and problem in line for line in lines), problem
    assert "4 of 5 input(s) are bad" in captured.err
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before} == before


def test_check_all_good_prints_a_summary(tmp_path, capsys):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    assert main(["check", str(good), "demo:nuclei_3d"]) == 0
    assert capsys.readouterr().out.strip() == "grunet check: all 2 input(s) ok"


def test_check_labels_must_match_their_images(tmp_path, capsys):
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.ones((5, 32, 32), np.uint8))
    labels = tmp_path / "lab.tif"
    tifffile.imwrite(labels, np.ones((5, 32, 30), np.uint16))
    assert main(["check", str(image), "--labels", str(labels)]) == 2
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith(f"{labels}: label image shape") and "does not match" in line


def test_check_constant_image_is_a_warning_not_an_error(tmp_path, capsys):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((16, 16), 7, np.uint8))
    assert main(["check", str(flat)]) == 0
    out = capsys.readouterr().out
    assert "warning: constant channel(s) ch0" in out
