"""The Snakemake workflow, run on tiny crops of the real demo images in a temporary directory.

Every run uses the repository's Snakefile with ``--directory <tmp>``, so results and Snakemake's
bookkeeping land in the temporary directory, never in the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
STAGE_JOBS = {
    "convert": 2,
    "predict": 2,
    "segment": 2,
    "measure": 2,
    "count": 2,
    "aggregate_counts": 1,
    "report": 1,
    "all": 1,
}
SAMPLE_SHEET = (
    "sample\tpath\tannotation\taxes\tcondition\twell\n"
    "timelapse\tdata/timelapse.tif\t\tTYX\tcontrol\tA01\n"
    "stack\tdata/stack.tif\tdata/stack_labels.tif\tZYX\tdrug\tA02\n"
)

pytestmark = pytest.mark.skipif(shutil.which("grunet") is None, reason="grunet not on PATH")


def snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the repository's workflow in ``workdir``; return the finished process."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake (dry-)run."""
    stats = output[output.index("Job stats:") :]
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m[1] != "total"
    }


def model_path(root: Path) -> str:
    """The shipped model where it exists, else a small random checkpoint (same architecture)."""
    from grunet.checkpoint import SHIPPED_MODEL

    if SHIPPED_MODEL.is_file():
        return ""
    import torch

    from grunet.checkpoint import save_checkpoint
    from grunet.model import SMALL, GRUUNet

    path = root / "random_small.pt"
    if not path.exists():
        torch.manual_seed(0)
        save_checkpoint(path, GRUUNet(SMALL), {"note": "random weights, tests only"})
    return str(path)


def make_experiment(root: Path, timelapse, stack, stack_labels, **config: str) -> Path:
    """An experiment folder: data crops, config/config.yaml, config/samples.tsv."""
    import tifffile

    (root / "data").mkdir(parents=True)
    (root / "config").mkdir()
    tifffile.imwrite(root / "data" / "timelapse.tif", timelapse, photometric="minisblack")
    tifffile.imwrite(root / "data" / "stack.tif", stack, photometric="minisblack")
    tifffile.imwrite(root / "data" / "stack_labels.tif", stack_labels, photometric="minisblack")
    (root / "config" / "samples.tsv").write_text(SAMPLE_SHEET)
    lines = {
        "samples": "config/samples.tsv",
        "model": repr(model_path(root.parent)),
        "predict": "{threads: 1}",
        "report": "{frames: 2}",
        **config,
    }
    (root / "config" / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return root


@pytest.fixture(scope="module")
def crops(nuclei_timelapse, nuclei_3d):
    """Tiny real crops: 3 frames of the time-lapse, 3 planes of the 3D stack (+ its labels)."""
    image, labels = nuclei_3d
    return (
        nuclei_timelapse[:3, 200:296, 200:296],
        image[28:31, 96:176, 96:176],
        labels[28:31, 96:176, 96:176],
    )


@pytest.fixture
def experiment(tmp_path, crops) -> Path:
    return make_experiment(tmp_path / "exp", *crops)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, crops):
    """One complete run of the workflow (shared by the tests that inspect its outputs)."""
    root = make_experiment(tmp_path_factory.mktemp("run") / "exp", *crops)
    started = time.perf_counter()
    result = snakemake(root)
    assert result.returncode == 0, result.stderr[-4000:]
    return root, time.perf_counter() - started


# ------------------------------------------------------------------------- start-up checks


def test_lint_has_no_findings(experiment):
    result = snakemake(experiment, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_dry_run_lists_every_stage_once_per_sample(experiment):
    result = snakemake(experiment, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == STAGE_JOBS
    assert not (experiment / "results").exists()


def test_dry_run_with_training_adds_one_train_job_before_predict(experiment):
    config = experiment / "config" / "config.yaml"
    config.write_text(config.read_text() + "train: {enabled: true}\n")
    result = snakemake(experiment, "--dry-run", "--printshellcmds")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == {**STAGE_JOBS, "train": 1}
    predict = result.stdout[result.stdout.index("rule predict:") :]
    assert "results/train/best.pt" in predict.split("rule ", 2)[1]  # predicts with the new model
    train = result.stdout[result.stdout.index("rule train:") :].split("rule ", 2)[1]
    assert "--labels data/stack_labels.tif" in train  # only the annotated sample trains


def test_sample_sheet_diameter_column_and_config_key_reach_prediction(experiment):
    sheet = experiment / "config" / "samples.tsv"
    rows = SAMPLE_SHEET.splitlines()
    rows = [rows[0] + "\tdiameter", rows[1] + "\t31.5", rows[2] + "\t"]
    sheet.write_text("\n".join(rows) + "\n")
    config = experiment / "config" / "config.yaml"
    config.write_text(config.read_text().replace("{threads: 1}", "{threads: 1, diameter_um: 7}"))
    result = snakemake(experiment, "--dry-run", "--printshellcmds")
    assert result.returncode == 0, result.stderr
    commands = [c for c in result.stdout.splitlines() if "grunet predict" in c]
    timelapse = next(c for c in commands if "timelapse.ome.zarr" in c)
    stack = next(c for c in commands if "stack.ome.zarr" in c)
    assert "--diameter 31.5" in timelapse and "--diameter-um" not in timelapse  # the row wins
    assert "--diameter-um 7" in stack and "--diameter " not in stack  # else the config key


def test_augment_config_key_reaches_every_predict_job(experiment):
    config = experiment / "config" / "config.yaml"
    config.write_text(config.read_text().replace("{threads: 1}", "{threads: 1, augment: true}"))
    result = snakemake(experiment, "--dry-run", "--printshellcmds")
    assert result.returncode == 0, result.stderr
    commands = [c for c in result.stdout.splitlines() if "grunet predict" in c]
    assert len(commands) == 2 and all("--augment" in c for c in commands)


def test_embedded_demo_config_plans_both_demo_samples(tmp_path, crops):
    root = make_experiment(tmp_path / "demo", *crops)
    for name in ("config.yaml", "samples.tsv"):
        shutil.copy(REPO / "config" / name, root / "config" / name)
    extra = ["--config", f"model={model_path(tmp_path)}"] if model_path(tmp_path) else []
    result = snakemake(root, "--dry-run", "--printshellcmds", *extra)
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == STAGE_JOBS
    assert "demo:nuclei_timelapse" in result.stdout and "demo:nuclei_3d" in result.stdout


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("predict={tiel: 64}", "unknown key 'predict.tiel'"),
        ("predict={tile: big}", "key 'predict.tile': 'big' is not of type"),
        ("model=missing.pt", "config key 'model': checkpoint 'missing.pt' does not exist"),
        ("train={samples: [timelapse]}", "sample 'timelapse' has no annotation"),
    ],
)
def test_bad_config_fails_at_start_up_naming_the_key(experiment, setting, message):
    result = snakemake(experiment, "--config", setting)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr, result.stderr
    assert not (experiment / "results").exists()  # nothing ran


def test_sample_sheet_row_with_a_missing_file_fails_at_start_up(experiment):
    sheet = experiment / "config" / "samples.tsv"
    sheet.write_text(sheet.read_text().replace("data/stack.tif", "data/stack_typo.tif", 1))
    result = snakemake(experiment)
    assert result.returncode != 0
    assert (
        "config/samples.tsv row 2 (sample 'stack'): column 'path'" in result.stdout + result.stderr
    )
    assert "data/stack_typo.tif' does not exist" in result.stdout + result.stderr
    assert not (experiment / "results").exists()


def test_sample_sheet_with_an_unknown_demo_image_fails_naming_the_row(experiment):
    sheet = experiment / "config" / "samples.tsv"
    sheet.write_text(sheet.read_text() + "demo\tdemo:nucleii\t\t\tcontrol\tA03\n")
    result = snakemake(experiment, "--dry-run")
    assert result.returncode != 0
    assert (
        "row 3 (sample 'demo'): column 'path': demo:nucleii: unknown demo image"
        in result.stdout + result.stderr
    )


def test_duplicate_sample_name_is_rejected(experiment):
    sheet = experiment / "config" / "samples.tsv"
    sheet.write_text(sheet.read_text().replace("stack\tdata", "timelapse\tdata"))
    result = snakemake(experiment, "--dry-run")
    assert result.returncode != 0
    assert "duplicate sample name(s) 'timelapse' (rows 1, 2)" in result.stdout + result.stderr


def test_sample_name_that_is_not_a_file_name_is_rejected(experiment):
    sheet = experiment / "config" / "samples.tsv"
    sheet.write_text(sheet.read_text().replace("stack\tdata", "my stack\tdata"))
    result = snakemake(experiment, "--dry-run")
    assert result.returncode != 0
    assert "row 2 (sample 'my stack'): key 'sample'" in result.stdout + result.stderr


# ------------------------------------------------------------------------------ full runs


def test_full_run_writes_counts_tables_labels_and_report(finished_run):
    root, _ = finished_run
    results = root / "results"
    counts = pd.read_csv(results / "counts.csv")
    assert {"sample", "t", "n_cells", "condition", "well"} <= set(counts.columns)
    per_sample = counts.groupby("sample")["t"].nunique().to_dict()
    assert per_sample == {"timelapse": 3, "stack": 1}  # time-lapse: 3 frames; Z-stack: one t
    assert dict(zip(counts["sample"], counts["condition"])) == {
        "timelapse": "control",
        "stack": "drug",
    }
    for sample in ("timelapse", "stack"):
        table = pd.read_parquet(results / "cells" / f"{sample}.parquet")
        assert (results / "cells" / f"{sample}.csv").is_file()
        assert {"sample", "t", "z", "label", "area", "well", "condition"} <= set(table.columns)
        assert (table["sample"] == sample).all()
        assert (results / "images" / f"{sample}.ome.zarr" / "labels" / "cells").is_dir()
        assert (results / "segment" / f"{sample}.json").is_file()
        assert (results / "logs" / "predict" / f"{sample}.log").is_file()
    page = (results / "report.html").read_text()
    assert "timelapse" in page and "stack" in page and "data:image/png;base64," in page


def test_second_run_has_nothing_to_do(finished_run):
    root, _ = finished_run
    result = snakemake(root, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def test_killed_run_rerun_with_rerun_incomplete_gives_identical_tables(
    finished_run, tmp_path, crops
):
    reference, _ = finished_run
    root = make_experiment(tmp_path / "exp", *crops)
    sheet = root / "config" / "samples.tsv"  # one sample keeps the test short
    sheet.write_text("".join(sheet.read_text().splitlines(keepends=True)[:2]))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE)]
    cmd += ["--directory", str(root), "--cores", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 300
    # kill the whole run (snakemake and its jobs) as soon as prediction has started
    while not list((root / "results" / "logs").glob("predict/*.log")):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (root / "results" / "counts.csv").exists()

    # a SIGKILL (power loss, OOM killer) leaves Snakemake's lock behind: unlock, then rerun
    assert snakemake(root, "--unlock").returncode == 0
    result = snakemake(root, "--rerun-incomplete")
    assert result.returncode == 0, result.stderr[-4000:]
    pd.testing.assert_frame_equal(
        pd.read_parquet(root / "results" / "cells" / "timelapse.parquet"),
        pd.read_parquet(reference / "results" / "cells" / "timelapse.parquet"),
    )
    for name in ("cells/timelapse.csv", "counts/timelapse.csv"):
        assert (root / "results" / name).read_bytes() == (reference / "results" / name).read_bytes()
    counts = pd.read_csv(root / "results" / "counts.csv")
    expected = pd.read_csv(reference / "results" / "counts.csv")
    expected = expected[expected["sample"] == "timelapse"].reset_index(drop=True)
    pd.testing.assert_frame_equal(counts, expected)


TINY_TRAINING = """\
model: {preset: small}
patch_size: 64
batch_size: 2
epochs: 1
steps_per_epoch: 2
warmup_steps: 1
threads: 1
"""


@pytest.mark.slow
def test_training_run_predicts_with_the_trained_model_and_reports_it(tmp_path, crops):
    root = make_experiment(
        tmp_path / "exp", *crops, train="{enabled: true, config: config/train_tiny.yaml}"
    )
    (root / "config" / "train_tiny.yaml").write_text(TINY_TRAINING)
    result = snakemake(root)
    assert result.returncode == 0, result.stderr[-4000:]
    train = root / "results" / "train"
    for name in ("best.pt", "last.pt", "log.csv", "curves.png", "val_metrics.json"):
        assert (train / name).is_file(), name
    from grunet.checkpoint import file_sha256

    page = (root / "results" / "report.html").read_text()
    assert "<h2>Training</h2>" in page and "Validation metrics" in page
    assert file_sha256(train / "best.pt") in page


# ------------------------------------------------------------------------ semantic models


def semantic_experiment(root: Path) -> Path:
    """Two RGB street-like pictures (PNG, JPEG) and a tiny semantic checkpoint."""
    from PIL import Image
    from test_semantic_predict import rgb_image, semantic_checkpoint

    (root / "data").mkdir(parents=True)
    (root / "config").mkdir()
    Image.fromarray(rgb_image(seed=1).transpose(1, 2, 0)).save(root / "data" / "a.png")
    Image.fromarray(rgb_image(seed=2).transpose(1, 2, 0)).save(root / "data" / "b.jpg")
    model = semantic_checkpoint(root / "semantic.pt")
    (root / "config" / "samples.tsv").write_text(
        "sample\tpath\tcondition\na\tdata/a.png\tx\nb\tdata/b.jpg\ty\n"
    )
    (root / "config" / "config.yaml").write_text(
        f"samples: config/samples.tsv\nmodel: {str(model)!r}\npredict: {{threads: 1}}\n"
    )
    return root


def test_semantic_checkpoint_plans_class_maps_instead_of_cells(tmp_path):
    result = snakemake(semantic_experiment(tmp_path / "exp"), "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert job_counts(result.stdout) == {
        "convert": 2,
        "predict_classes": 2,
        "aggregate_class_areas": 1,
        "report_classes": 1,
        "all": 1,
    }


@pytest.mark.slow
def test_semantic_run_writes_class_maps_areas_and_report(tmp_path):
    root = semantic_experiment(tmp_path / "exp")
    result = snakemake(root)
    assert result.returncode == 0, result.stderr[-4000:]
    results = root / "results"
    areas = pd.read_csv(results / "class_areas.csv")
    assert sorted(areas["sample"].unique()) == ["a", "b"] and len(areas) == 2 * 4
    assert dict(zip(areas["sample"], areas["condition"])) == {"a": "x", "b": "y"}
    for sample in ("a", "b"):
        assert (results / "images" / f"{sample}.ome.zarr" / "labels" / "classes").is_dir()
        assert (results / "classes" / f"{sample}.csv").is_file()
    page = (results / "report.html").read_text()
    assert "Class maps" in page and "Class areas" in page


SEMANTIC_TRAINING = """\
task: semantic
classes: [sky, road, car]
in_channels: 3
model: {preset: small}
patch_size: 32
batch_size: 2
epochs: 1
steps_per_epoch: 2
warmup_steps: 1
threads: 1
"""


def semantic_training_experiment(root: Path) -> Path:
    """The semantic experiment with class-label annotations and a semantic training config."""
    from PIL import Image

    semantic_experiment(root)
    for name, image in (("a", "a.png"), ("b", "b.jpg")):
        rgb = np.asarray(Image.open(root / "data" / image))
        labels = np.digitize(rgb.mean(axis=-1), [85, 170]).astype(np.uint8)  # 3 classes
        Image.fromarray(labels).save(root / "data" / f"{name}_classes.png")
    (root / "config" / "samples.tsv").write_text(
        "sample\tpath\tannotation\tcondition\n"
        "a\tdata/a.png\tdata/a_classes.png\tx\nb\tdata/b.jpg\tdata/b_classes.png\ty\n"
    )
    (root / "config" / "train_semantic.yaml").write_text(SEMANTIC_TRAINING)
    (root / "config" / "config.yaml").write_text(
        "samples: config/samples.tsv\npredict: {threads: 1}\n"
        "train: {enabled: true, config: config/train_semantic.yaml}\n"
    )
    return root


def test_semantic_training_config_plans_training_then_class_maps(tmp_path):
    result = snakemake(semantic_training_experiment(tmp_path / "exp"), "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = job_counts(result.stdout)
    assert counts["train"] == 1 and counts["predict_classes"] == 2 and "segment" not in counts
    predict = result.stdout[result.stdout.index("rule predict_classes:") :]
    assert "results/train/best.pt" in predict.split("rule ", 2)[1]


@pytest.mark.slow
def test_semantic_training_run_trains_from_the_sample_sheet(tmp_path):
    root = semantic_training_experiment(tmp_path / "exp")
    result = snakemake(root)
    assert result.returncode == 0, result.stderr[-4000:]
    results = root / "results"
    from grunet.checkpoint import load_checkpoint
    from grunet.task import model_task

    assert model_task(load_checkpoint(results / "train" / "best.pt").metadata) == "semantic"
    areas = pd.read_csv(results / "class_areas.csv")
    assert sorted(areas["sample"].unique()) == ["a", "b"]
    assert "Class maps" in (results / "report.html").read_text()
