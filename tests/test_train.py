"""Training on tiny real crops: outputs, falling loss, exact resume, loss, augmentation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from grunet.checkpoint import load_checkpoint
from grunet.cli import main
from grunet.errors import ConfigError
from grunet.preprocess import median_diameter, targets_from_labels
from grunet.train import (
    PatchSampler,
    Sample,
    dataset_paths,
    focal_loss,
    load_config,
    make_loss,
    make_samples,
    pixel_weights,
    rescaled,
    train,
)
from grunet.train_loop import lr_factor
from tests.conftest import shared_dataset

DEMO = Path(__file__).resolve().parents[1] / "config" / "train_demo.yaml"


def demo_config(**overrides) -> dict:
    cfg = load_config(DEMO, overrides)
    cfg["data"]["root"] = str(shared_dataset("dsb2018_fluo"))
    cfg["threads"] = 1
    return cfg


def read_log(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("train") / "full"
    train(demo_config(epochs=3, tune_thresholds=True, tune_images=2), out, device="cpu")
    return out


def test_demo_training_writes_all_outputs_with_finite_falling_loss(demo_run):
    for name in ("best.pt", "last.pt", "log.csv", "curves.png", "val_metrics.json"):
        assert (demo_run / name).is_file(), name
    rows = read_log(demo_run / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    losses = [float(r["train_loss"]) for r in rows]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    best = load_checkpoint(demo_run / "best.pt")
    assert set(best.metadata["segmentation"]) == {"seed_threshold", "foreground_threshold"}
    assert best.metadata["normalization"]["percentiles"] == [1.0, 99.8]
    assert "resume" not in best.metadata  # best.pt stays small
    assert best.metadata["train_f1_50"]["n_images"] == 2  # thresholds tuned on training images
    val = json.loads((demo_run / "val_metrics.json").read_text())
    assert val["segmentation"] == best.metadata["segmentation"]
    assert (demo_run / "best.pt").stat().st_size < (demo_run / "last.pt").stat().st_size


def test_checkpoint_records_the_object_diameter_its_images_were_rescaled_to(demo_run):
    """Without data.object_diameter, D0 is the median of the training images' medians."""
    train_images = make_samples(*dataset_paths(demo_config(), "train"))
    expected = float(np.median([s.diameter for s in train_images]))
    meta = load_checkpoint(demo_run / "best.pt").metadata
    assert meta["object_diameter"] == pytest.approx(expected)
    assert meta["config"]["data"]["object_diameter"] == pytest.approx(expected)


def test_resume_after_a_stop_continues_from_the_next_epoch_identically(demo_run, tmp_path):
    out = tmp_path / "stopped"
    train(demo_config(epochs=3), out, device="cpu", stop_after=1)
    assert load_checkpoint(out / "last.pt").metadata["epoch"] == 1
    train(demo_config(epochs=3), out, device="cpu", resume=True)
    full, resumed = load_checkpoint(demo_run / "last.pt"), load_checkpoint(out / "last.pt")
    assert resumed.metadata["epoch"] == 3
    for key, value in full.state_dict.items():
        assert torch.equal(value, resumed.state_dict[key]), key

    def without_timing(rows):
        return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]

    assert without_timing(read_log(out / "log.csv")) == without_timing(
        read_log(demo_run / "log.csv")
    )
    a, b = full.metadata["resume"]["optimizer"], resumed.metadata["resume"]["optimizer"]
    for k in a["state"]:
        assert torch.equal(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"])


def test_weight_averaging_saves_the_average_and_resumes_identically(tmp_path):
    """With ``ema_decay`` best.pt / last.pt hold the weights' moving average (not the raw
    weights, which last.pt keeps to resume from), and a stopped run resumes to the same
    average and raw weights as an uninterrupted one."""
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    train(demo_config(epochs=2, ema_decay=0.9), full, device="cpu")
    train(demo_config(epochs=2, ema_decay=0.9), stopped, device="cpu", stop_after=1)
    train(demo_config(epochs=2, ema_decay=0.9), stopped, device="cpu", resume=True)
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(stopped / "last.pt")
    raw_a, raw_b = a.metadata["resume"]["raw_weights"], b.metadata["resume"]["raw_weights"]
    for key, value in a.state_dict.items():
        assert torch.equal(value, b.state_dict[key]), key
        assert torch.equal(raw_a[key], raw_b[key]), key
    moved = [k for k, v in a.state_dict.items() if v.is_floating_point()]
    assert any(not torch.equal(a.state_dict[k], raw_a[k]) for k in moved)  # an average, not raw
    with pytest.raises(ConfigError, match="ema_decay"):
        train(demo_config(ema_decay=1.5), tmp_path / "bad", device="cpu")


def test_existing_run_needs_resume_and_resume_needs_a_run(demo_run, tmp_path):
    with pytest.raises(ConfigError, match="--resume"):
        train(demo_config(), demo_run, device="cpu")
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(demo_config(), tmp_path / "new", device="cpu", resume=True)


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 2\naugment:\n  flipp: true\n")
    with pytest.raises(ConfigError, match="augment.flipp"):
        load_config(path)


def test_cli_trains_on_explicit_tiff_pairs(tmp_path):
    root = shared_dataset("dsb2018_fluo")
    ids = sorted(p.stem for p in (root / "images").glob("*.tif"))[:3]
    images, labels = [], []
    for i in ids:  # tiny real crops
        for kind, paths in (("images", images), ("labels", labels)):
            path = tmp_path / f"{kind}_{i[:8]}.tif"
            tifffile.imwrite(path, tifffile.imread(root / kind / f"{i}.tif")[:96, :96])
            paths.append(str(path))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("epochs: 1\nsteps_per_epoch: 2\nbatch_size: 1\npatch_size: 64\nthreads: 1\n")
    out = tmp_path / "run"
    argv = ["train", "-c", str(cfg), "-o", str(out), "--device", "cpu"]
    assert main([*argv, "--images", *images, "--labels", *labels]) == 0
    meta = load_checkpoint(out / "best.pt").metadata
    assert meta["n_train_images"] == 2 and meta["n_val_images"] == 1


def test_augmentation_moves_image_and_targets_together():
    rng = np.random.default_rng(0)
    labels = np.zeros((80, 90), np.int32)
    for k, (y, x) in enumerate([(20, 20), (20, 34), (60, 50), (40, 75)], start=1):
        labels[y - 6 : y + 6, x - 6 : x + 6] = k  # two of them touch
    image = (labels > 0).astype(np.float32)
    sample = Sample("s", image, targets_from_labels(labels), labels, np.flatnonzero(labels))
    cfg = load_config(
        None, {"patch_size": 32, "augment": {"p_intensity": 0.0, "scale_jitter": [1.0, 1.0]}}
    )
    sampler = PatchSampler([sample], cfg, rng)
    for _ in range(20):
        image, target, patch_contact = sampler.patch()
        assert image.shape == target.shape == patch_contact.shape == (32, 32)
        np.testing.assert_array_equal(image > 0.5, target > 0)


def real_train_samples(n: int = 6) -> list[Sample]:
    root = shared_dataset("dsb2018_fluo")
    cfg = load_config(None, {"data": {"root": str(root), "limit_train": n}})
    return make_samples(*dataset_paths(cfg, "train"))


def test_scale_jittered_augmented_patches_keep_labels_on_their_nuclei():
    """At every scale, flip and rotation the labels stay on the image's own nuclei."""
    samples = real_train_samples()
    for s in samples:  # the image *is* its foreground: any misalignment shows as disagreement
        s.image = (s.labels > 0).astype(np.float32)
        s.scale = 17.0 / s.diameter
    cfg = load_config(
        None, {"patch_size": 96, "augment": {"p_intensity": 0.0, "scale_jitter": [0.5, 2.0]}}
    )
    sampler = PatchSampler(samples, cfg, np.random.default_rng(1))
    for _ in range(40):
        image, labels = sampler.patch_with_labels()
        agree = np.mean((image > 0.5) == (labels > 0))
        assert agree > 0.97, agree


def test_outlier_augmentation_labels_the_saturated_nuclei_it_paints():
    samples = real_train_samples(3)
    for s in samples:
        s.scale = 17.0 / s.diameter
    opts = {"p_intensity": 1.0, "p_outlier": 1.0, "p_blur": 0.0, "noise": 0.0, "shift": [0, 0]}
    opts.update(outlier_gain=[0.1, 0.1], outlier_nuclei=4, outlier_level=[1.0, 1.0])
    cfg = load_config(None, {"patch_size": 128, "augment": opts})
    sampler = PatchSampler(samples, cfg, np.random.default_rng(2))
    painted = 0
    for _ in range(20):
        image, labels = sampler.patch_with_labels()
        bright = image > 0.5  # ordinary nuclei sit at <= ~0.1 x gamma'd intensity, painted at 1
        assert labels[bright].all()
        painted += len(np.unique(labels[bright]))
    assert painted >= 10


def test_overexposure_clips_the_brightest_nucleus_pixels_to_the_top_of_the_range():
    from grunet.augment import overexpose

    samples = real_train_samples(3)
    for s in samples:
        s.scale = 17.0 / s.diameter
    opts = {"p_intensity": 0.0, "p_saturate": 1.0, "saturate_share": [0.2, 0.2]}
    cfg = load_config(None, {"patch_size": 128, "augment": opts})
    sampler = PatchSampler(samples, cfg, np.random.default_rng(3))
    for _ in range(5):
        image, labels = sampler.patch_with_labels()
        if labels.any():
            top = image == image.max()
            assert image.max() == 1.0
            assert top.sum() >= 0.15 * (labels > 0).sum()  # a flat plateau, not one pixel
    flat = np.zeros((8, 8), np.float32)
    assert overexpose(flat, np.ones((8, 8), int), 0.3) is flat  # nothing bright to clip


def test_low_magnification_patches_are_what_prediction_makes_of_tiny_nuclei():
    """A low-resolution patch is the same crop with the same labels, shrunk and resized back by
    prediction's own resampling: fine detail gone, brightness kept."""
    from grunet.scale import resample

    samples = real_train_samples(3)
    for s in samples:
        s.scale = 17.0 / s.diameter
    plain_opts = {"p_intensity": 0.0}
    low_opts = {**plain_opts, "p_lowres": 1.0, "lowres_factor": [3.0, 3.0]}
    plain_cfg = load_config(None, {"patch_size": 128, "augment": plain_opts})
    low_cfg = load_config(None, {"patch_size": 128, "augment": low_opts})
    for seed in range(4):
        image, labels = PatchSampler(
            samples, plain_cfg, np.random.default_rng(seed)
        ).patch_with_labels()
        low, low_labels = PatchSampler(
            samples, low_cfg, np.random.default_rng(seed)
        ).patch_with_labels()
        np.testing.assert_array_equal(low_labels, labels)
        coarse = resample(image[None], (128, 128), (43, 43))
        np.testing.assert_allclose(low, resample(coarse, (43, 43), (128, 128))[0], atol=1e-6)
        assert abs(float(low.mean()) - float(image.mean())) < 0.01 * max(float(image.mean()), 1e-3)
        if image.std() > 0:  # fine detail (second differences) mostly gone
            detail = np.abs(np.diff(image, 2, axis=1)).mean()
            assert np.abs(np.diff(low, 2, axis=1)).mean() < 0.5 * detail


def test_photon_noise_grows_with_brightness_and_keeps_the_image(nuclei_timelapse):
    """Photon noise as a dim exposure records it: at N photons for the signal level a pixel of
    that level varies by signal/sqrt(N), background pixels by less, and every region keeps
    its mean brightness (the image is not darkened or brightened)."""
    from grunet.augment import shot_noise
    from grunet.preprocess import normalize_channels

    frame = normalize_channels(nuclei_timelapse[3][None].astype(np.float32))[0]
    signal = float(np.percentile(frame, 99))
    flat = np.full((256, 256), signal, np.float32)
    noisy = shot_noise(flat, signal, 20.0, np.random.default_rng(0))
    assert float(noisy.std()) == pytest.approx(signal / math.sqrt(20.0), rel=0.05)
    assert float(noisy.mean()) == pytest.approx(signal, rel=0.01)
    noisy = shot_noise(frame, signal, 20.0, np.random.default_rng(1))
    bright, dark = frame > 0.5 * signal, frame < 0.05 * signal
    residual = noisy - frame
    assert residual[bright].std() > 2 * residual[dark].std()
    for region in (bright, dark):
        assert abs(float(residual[region].mean())) < 0.01 * signal


def test_uneven_background_is_a_smooth_ramp_up_to_its_level():
    """The uneven-background augmentation only adds, up to its level, and is smooth (a ramp: no
    structure a nucleus could be mistaken for); across patches it covers flat and steep."""
    from grunet.augment import smooth_background

    rng = np.random.default_rng(2)
    spans = []
    for _ in range(20):
        ramp = smooth_background((128, 96), 0.4, rng)
        assert ramp.min() >= 0 and ramp.max() == pytest.approx(0.4, abs=1e-6)
        assert np.abs(np.diff(ramp, 2, axis=0)).max() < 1e-4  # linear: no curvature
        assert np.abs(np.diff(ramp, 2, axis=1)).max() < 1e-4
        spans.append(float(ramp.max() - ramp.min()))
    assert min(spans) < 0.1 and max(spans) > 0.3


def test_cytoplasm_glow_lies_around_the_nuclei_and_stays_background():
    """The glow augmentation (dim cell bodies) only brightens, only within its reach of a
    nucleus (at most 1.5 × 1.5 diameters beyond the off-centre nucleus), never far background;
    the labels, which say background there, are what the model learns."""
    from scipy import ndimage as ndi

    from grunet.augment import add_cytoplasm_glow

    rng = np.random.default_rng(4)
    for sample in real_train_samples(3):
        image, labels = sample.image, sample.labels
        glowing = add_cytoplasm_glow(image, labels, 17.0, (0.3, 0.3), rng)
        added = glowing - image
        assert glowing.dtype == np.float32 and added.min() >= 0 and added.max() > 0
        nuclei = labels > 0
        near = ndi.distance_transform_edt(~nuclei) <= 17.0 * (2.25 + 0.3 * 2**0.5) + 1
        assert not added[~near].any()
        assert added[near & ~nuclei].mean() > 0.05 * np.median(image[nuclei])


def test_eccentric_glow_extends_each_cell_body_to_a_side_of_its_own():
    """With ``eccentric`` each nucleus' body reaches out to its own side (a crescent of
    cytoplasm beside the nucleus), so the glow's centre sits off each nucleus in directions
    that differ between nuclei; without it every body is shifted alike. Labels unchanged."""
    from scipy import ndimage as ndi

    from grunet.augment import add_cytoplasm_glow

    d = 16.0
    labels = np.zeros((256, 256), np.int32)
    centres = [(48, 48), (48, 208), (208, 48), (208, 208), (128, 128)]
    yy, xx = np.mgrid[:256, :256]
    for k, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (d / 2) ** 2] = k
    image = np.where(labels > 0, 1.0, 0.0).astype(np.float32)
    own = ndi.distance_transform_edt(labels == 0, return_indices=True)[1]
    nearest = labels[own[0], own[1]]  # each pixel's nucleus

    def offsets(eccentric: float, seed: int) -> np.ndarray:
        before = labels.copy()
        glow = add_cytoplasm_glow(
            image, labels, d, (0.3, 0.3), np.random.default_rng(seed), eccentric
        )
        assert (labels == before).all()
        added = glow - image
        index = range(1, len(centres) + 1)
        at = np.array(ndi.center_of_mass(added, nearest, index))
        return at - np.array(ndi.center_of_mass(labels > 0, labels, index))

    def spread(eccentric: float) -> float:  # how far the bodies' offsets differ, px
        found = [offsets(eccentric, seed) for seed in range(6)]
        return float(np.mean([np.abs(o - o.mean(0)).max() for o in found]))

    # wobble and texture move each body's centre a little (2-3.3 px per draw) even when all
    # are shifted alike; bodies of their own side differ by 4.3-8.5 px
    assert spread(0.0) < 0.22 * d < 0.28 * d < spread(1.0)


def test_nucleoli_darken_only_inside_the_nuclei():
    """Nucleoli augmentation: dark spots within nuclei, nothing outside them brightened or
    changed, and the nuclei not erased (most of each stays as it was)."""
    from grunet.augment import add_nucleoli

    rng = np.random.default_rng(5)
    for sample in real_train_samples(3):
        image, labels = sample.image, sample.labels
        spotted = add_nucleoli(image, labels, sample.diameter, rng)
        changed = spotted != image
        assert spotted.dtype == np.float32 and changed.any()
        assert not changed[labels == 0].any() and (spotted <= image).all()
        assert (spotted[labels > 0] >= 0.3 * image[labels > 0]).all()
        assert changed[labels > 0].mean() < 0.5


def test_condensed_chromatin_stays_inside_each_nucleus():
    """Chromatin augmentation: bright clumps on a dimmer ground inside the nuclei; the
    background away from them unchanged, no clump spanning the border of two touching nuclei."""
    from scipy import ndimage as ndi

    from grunet.augment import add_condensed_chromatin

    rng = np.random.default_rng(6)
    for sample in real_train_samples(3):
        image, labels = sample.image, sample.labels
        textured = add_condensed_chromatin(image, labels, sample.diameter, rng)
        nuclei = labels > 0
        assert textured.dtype == np.float32 and textured.shape == image.shape
        far = ndi.distance_transform_edt(~nuclei) > 8
        np.testing.assert_allclose(textured[far], image[far], atol=1e-4)  # blur tails
        ratio = (textured[nuclei] - np.median(image[~nuclei])) / np.maximum(
            image[nuclei] - np.median(image[~nuclei]), 1e-6
        )
        assert ratio.max() >= 1.5  # bright clumps ...
        assert (ratio <= 1.001).mean() >= 0.4  # ... on a ground no brighter than before
        borders = nuclei & (ndi.maximum_filter(labels, 3) != ndi.minimum_filter(labels, 3))
        touching = borders & (ndi.minimum_filter(np.where(nuclei, labels, labels.max() + 1), 3)
                              != ndi.maximum_filter(labels, 3))  # fmt: skip
        lifted = textured > image + 0.2 * np.median(image[nuclei])
        assert not (lifted & touching).any()


def test_glow_val_copies_keep_labels_and_are_the_same_every_epoch():
    """data.val_glow: each val image gains a glowing copy with the same labels, seeded, so
    epochs are compared on identical images (a criterion that sees glow picks best.pt)."""
    from grunet.train import with_glow

    val = real_train_samples(3)
    first, again = with_glow(val, (0.1, 0.3), seed=2), with_glow(val, (0.1, 0.3), seed=2)
    assert [c.name for c in first] == [s.name + "+glow" for s in val]
    for s, c, d in zip(val, first, again):
        assert np.array_equal(c.image, d.image)
        assert c.labels is s.labels and c.targets is s.targets
        assert (c.image >= s.image).all() and (c.image > s.image).any()


def test_rescaling_to_the_object_diameter_gives_that_median_diameter():
    for s in real_train_samples():
        for target in (17.0, 0.5 * s.diameter, 2.5 * s.diameter):
            out = rescaled(s, target, {"boundary_width": 2, "contact_radius": 3})
            assert abs(median_diameter(out.labels) / target - 1) < 0.05, (s.name, target)
            assert out.image.shape == out.labels.shape == out.targets.shape
            assert np.array_equal(np.unique(out.labels), np.unique(s.labels))  # no cell lost


def test_focal_loss_with_gamma_zero_is_weighted_cross_entropy():
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    weights = torch.tensor([1.0, 1.0, 2.0])
    expected = torch.nn.functional.cross_entropy(logits, target, weight=weights)
    alpha = pixel_weights(target, weights)
    assert focal_loss(logits, target, alpha, gamma=0.0).item() == pytest.approx(expected.item())
    assert focal_loss(logits, target, alpha, gamma=2.0) < expected


def test_contact_weight_raises_the_loss_of_errors_where_cells_touch():
    cfg = load_config(None, {"loss": {"contact_weight": 9.0}})
    plain = make_loss(load_config(None, {"loss": {"contact_weight": 0.0}}))
    weighted = make_loss(cfg)
    target = torch.ones(1, 4, 4, dtype=torch.long)
    logits = torch.zeros(1, 3, 4, 4)
    logits[:, 1] = 4.0  # confident and right everywhere ...
    logits[0, :, 0, 0] = torch.tensor([4.0, 0.0, 0.0])  # ... but one contact pixel is wrong
    contact = torch.zeros(1, 4, 4, dtype=torch.bool)
    contact[0, 0, 0] = True
    # no contact mask, or a zero weight: plain class-weighted cross-entropy
    assert weighted(logits, target).item() == pytest.approx(plain(logits, target, contact).item())
    # the wrong pixel counts 10x: its share of the mean loss rises from 1/16 to 10/25
    assert weighted(logits, target, contact) > 3 * plain(logits, target, contact)
    focal = make_loss(load_config(None, {"loss": {"name": "focal", "contact_weight": 9.0}}))
    assert focal(logits, target, contact) > focal(logits, target)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    assert lr_factor(0, 10, 100, 0.01) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.01) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, 0.01) == pytest.approx(0.01)
    values = [lr_factor(s, 10, 100, 0.01) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_training_reads_ome_zarr_stores_with_labels(tmp_path):
    from grunet.io import read_image, write_image, write_labels

    root = shared_dataset("dsb2018_fluo")
    stores = []
    for i in sorted(p.stem for p in (root / "images").glob("*.tif"))[:2]:
        tif = tmp_path / f"{i[:8]}.tif"
        tifffile.imwrite(tif, tifffile.imread(root / "images" / f"{i}.tif")[:64, :64])
        store = write_image(tmp_path / f"{i[:8]}.ome.zarr", read_image(tif))
        labels = tifffile.imread(root / "labels" / f"{i}.tif")[:64, :64].astype(np.uint32)
        write_labels(store, labels[None, None])
        stores.append(str(store))
    cfg = load_config(None, {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1})
    cfg.update(patch_size=64, threads=1)
    train(cfg, tmp_path / "run", images=stores, labels=stores, device="cpu")
    meta = load_checkpoint(tmp_path / "run" / "best.pt").metadata
    assert meta["n_train_images"] == 1 and meta["n_val_images"] == 1


def test_export_ships_a_small_checkpoint_with_its_figures(demo_run, tmp_path):
    from grunet.train import export_model

    dest = tmp_path / "weights" / "model.pt"
    dest.parent.mkdir()
    sidecar = export_model(demo_run, dest, command="grunet train -c config/train_demo.yaml")
    shipped = load_checkpoint(dest)
    assert shipped.sha256 == sidecar["sha256"]
    assert dest.stat().st_size < 5_000_000
    assert shipped.metadata["command"].startswith("grunet train")
    assert shipped.metadata["normalization"]["percentiles"] == [1.0, 99.8]
    assert "seed_threshold" in shipped.metadata["segmentation"]
    assert json.loads(dest.with_suffix(".json").read_text())["best_epoch"] >= 1


def test_exported_scale_model_is_the_one_that_estimates_the_diameter(
    demo_run, tmp_path, nuclei_timelapse
):
    """A checkpoint shipped with a scale model: prediction uses its own weights, the diameter
    estimate the scale model's (the same estimate as that checkpoint gives on its own)."""
    from grunet.checkpoint import SHIPPED_MODEL, save_checkpoint
    from grunet.predict import Predictor
    from grunet.preprocess import normalize_channels
    from grunet.scale import estimate_diameter
    from grunet.train import export_model

    dest = tmp_path / "model.pt"
    sidecar = export_model(demo_run, dest, command="grunet train", scale_model=SHIPPED_MODEL)
    shipped = load_checkpoint(dest)
    source = load_checkpoint(SHIPPED_MODEL)  # its own scale model, if it has one, is the one
    assert sidecar["scale_model"]["sha256"] == (source.scale_model or source).sha256
    both = Predictor.from_checkpoint(shipped, device="cpu", compile=False)
    alone = Predictor.from_checkpoint(SHIPPED_MODEL, device="cpu", compile=False)
    run_only = Predictor.from_checkpoint(demo_run / "best.pt", device="cpu", compile=False)
    plane = normalize_channels(nuclei_timelapse[5, :256, :256][None].astype("float32"))
    np.testing.assert_array_equal(both.predict_plane(plane), run_only.predict_plane(plane))
    found, expected = estimate_diameter(both, [plane]), estimate_diameter(alone, [plane])
    np.testing.assert_equal(np.array(found.passes), np.array(expected.passes))  # nan == nan
    assert found.diameter == expected.diameter
    # a scale model that expects differently normalised planes is refused, naming it
    other = load_checkpoint(demo_run / "best.pt")
    meta = {**other.metadata, "normalization": {"percentiles": [0.1, 99.0]}}
    save_checkpoint(tmp_path / "other.pt", other.build_model(), meta)
    with pytest.raises(ConfigError, match="other.pt: its normalisation"):
        export_model(demo_run, tmp_path / "x.pt", command="-", scale_model=tmp_path / "other.pt")
    assert not (tmp_path / "x.pt").exists()


def test_attached_low_magnification_network_predicts_upscaled_images_only(
    demo_run, tmp_path, nuclei_timelapse
):
    """The shipped model with a run attached as its low-magnification network keeps its own
    weights and scale estimate; images upscaled past min_factor go to the run's network; a run
    at another object scale is refused, naming it, and nothing is written."""
    from grunet.checkpoint import SHIPPED_MODEL, save_checkpoint
    from grunet.predict import Predictor
    from grunet.preprocess import normalize_channels
    from grunet.scale import LOW_MAGNIFICATION, estimate_diameter
    from grunet.train import attach_low_magnification, export_model

    shipped = load_checkpoint(SHIPPED_MODEL)
    run = tmp_path / "run"
    run.mkdir()
    demo = load_checkpoint(demo_run / "best.pt")
    keys = ("normalization", "object_diameter")
    save_checkpoint(
        run / "best.pt",
        demo.build_model(),
        {**demo.metadata, **{k: shipped.metadata[k] for k in keys}},
    )
    dest = tmp_path / "model.pt"
    sidecar = attach_low_magnification(SHIPPED_MODEL, run, dest, command="grunet train ...")
    assert sidecar["low_magnification_model"]["min_factor"] == LOW_MAGNIFICATION
    assert json.loads(dest.with_suffix(".json").read_text())["sha256"] == sidecar["sha256"]
    both = Predictor.from_checkpoint(dest, device="cpu", compile=False)
    alone = Predictor.from_checkpoint(SHIPPED_MODEL, device="cpu", compile=False)
    low = Predictor.from_checkpoint(run / "best.pt", device="cpu", compile=False)
    plane = normalize_channels(nuclei_timelapse[5, :128, :128][None].astype("float32"))
    for factor, expected in ((1.0, alone), (1.5, alone), (LOW_MAGNIFICATION, low)):
        np.testing.assert_array_equal(
            both.predict_plane(plane, factor=factor), expected.predict_plane(plane, factor=factor)
        )
    assert estimate_diameter(both, [plane]).diameter == estimate_diameter(alone, [plane]).diameter
    # a run exported with another run as its low-magnification network (here: itself)
    exported = tmp_path / "exported.pt"
    export_model(demo_run, exported, command="-", low_magnification_run=demo_run)
    exported = Predictor.from_checkpoint(exported, device="cpu", compile=False)
    assert exported.for_factor(LOW_MAGNIFICATION).describe()["network"] == "low_magnification"
    other = tmp_path / "other"
    other.mkdir()
    meta = {**demo.metadata, "normalization": shipped.metadata["normalization"]}
    save_checkpoint(other / "best.pt", demo.build_model(), {**meta, "object_diameter": 30.0})
    with pytest.raises(ConfigError, match="other: its object_diameter 30.0 differs"):
        attach_low_magnification(SHIPPED_MODEL, other, tmp_path / "x.pt", command="-")
    assert not (tmp_path / "x.pt").exists()


def test_attached_scale_model_runs_the_estimate_and_nothing_else(tmp_path, nuclei_timelapse):
    """The shipped model with another network attached as its scale model (here its own main
    network, stored alone): the estimate's passes are that network's, no longer the shipped
    scale model's; predictions and the low-magnification network stay the shipped model's; a
    network normalised otherwise is refused, naming it, and nothing is written."""
    from grunet.checkpoint import SHIPPED_MODEL, save_checkpoint
    from grunet.predict import Predictor
    from grunet.preprocess import normalize_channels
    from grunet.scale import LOW_MAGNIFICATION, estimate_diameter
    from grunet.train import attach_scale_model

    shipped = load_checkpoint(SHIPPED_MODEL)
    scale = tmp_path / "scale.pt"
    save_checkpoint(scale, shipped.build_model(), shipped.metadata)  # no scale model inside
    dest = tmp_path / "model.pt"
    sidecar = attach_scale_model(SHIPPED_MODEL, scale, dest, command="grunet train ...")
    assert sidecar["scale_model"]["command"] == "grunet train ..."
    assert json.loads(dest.with_suffix(".json").read_text())["sha256"] == sidecar["sha256"]
    attached = Predictor.from_checkpoint(dest, device="cpu", compile=False)
    alone = Predictor.from_checkpoint(SHIPPED_MODEL, device="cpu", compile=False)
    scale_alone = Predictor.from_checkpoint(scale, device="cpu", compile=False)
    plane = normalize_channels(nuclei_timelapse[5][None].astype("float32"))
    passes = np.array(estimate_diameter(attached, [plane]).passes[0])
    np.testing.assert_array_equal(passes, estimate_diameter(scale_alone, [plane]).passes[0])
    before = np.array(estimate_diameter(alone, [plane]).passes[0])
    assert passes.shape != before.shape or not np.allclose(passes, before, equal_nan=True)
    crop = plane[:, :128, :128]
    for factor in (1.0, LOW_MAGNIFICATION):
        np.testing.assert_array_equal(
            attached.predict_plane(crop, factor=factor), alone.predict_plane(crop, factor=factor)
        )
    other = tmp_path / "other.pt"
    meta = {**shipped.metadata, "normalization": {"percentiles": [0.0, 100.0]}}
    save_checkpoint(other, shipped.build_model(), meta)
    with pytest.raises(ConfigError, match="other.pt: its normalisation"):
        attach_scale_model(SHIPPED_MODEL, other, tmp_path / "x.pt", command="-")
    assert not (tmp_path / "x.pt").exists()


def test_averaged_network_lies_between_its_two_and_keeps_the_companions(tmp_path):
    """average_networks: weight 0 predicts as the first network, 1 as the second, 0.5 in
    between (parameters averaged); the scale model and low-magnification network stay the
    first checkpoint's; another architecture or object diameter is refused, nothing written."""
    import torch

    from grunet.checkpoint import SHIPPED_MODEL, save_checkpoint
    from grunet.model import SMALL, GRUUNet
    from grunet.predict import Predictor
    from grunet.train import average_networks

    shipped = load_checkpoint(SHIPPED_MODEL)
    torch.manual_seed(3)
    other = tmp_path / "other.pt"
    save_checkpoint(other, GRUUNet(shipped.config), shipped.metadata)  # random weights
    image = torch.rand(1, 1, 64, 64)

    def logits(path) -> torch.Tensor:
        model = load_checkpoint(path).build_model().eval()
        with torch.no_grad():
            return model(image)

    ends = [average_networks(SHIPPED_MODEL, other, w, tmp_path / f"w{w}.pt", command="-")
            for w in (0.0, 1.0)]  # fmt: skip
    torch.testing.assert_close(logits(tmp_path / "w0.0.pt"), logits(SHIPPED_MODEL))
    torch.testing.assert_close(logits(tmp_path / "w1.0.pt"), logits(other))
    assert ends[1]["averaged_with"]["weight"] == 1.0
    half = tmp_path / "half.pt"
    sidecar = average_networks(SHIPPED_MODEL, other, 0.5, half, command="soup", notes={"f1": 1})
    averaged, second = load_checkpoint(half), load_checkpoint(other)
    assert sidecar["averaged_with"] == {"source": str(other), "sha256": second.sha256,
                                        "weight": 0.5, "command": "soup", "f1": 1}  # fmt: skip
    for name, value in averaged.state_dict.items():
        if value.is_floating_point():
            mean = (shipped.state_dict[name] + second.state_dict[name]) / 2
            torch.testing.assert_close(value, mean)
    assert averaged.scale_model.sha256 == shipped.scale_model.sha256
    assert averaged.low_magnification_model.sha256 == shipped.low_magnification_model.sha256
    assert Predictor.from_checkpoint(half, device="cpu").low_magnification is not None
    small = tmp_path / "small.pt"
    save_checkpoint(small, GRUUNet(SMALL.replace(hidden=4)), shipped.metadata)
    wider = tmp_path / "wider.pt"
    save_checkpoint(wider, shipped.build_model(), {**shipped.metadata, "object_diameter": 30.0})
    for bad, message in ((small, "architecture"), (wider, "object_diameter")):
        with pytest.raises(ConfigError, match=message):
            average_networks(SHIPPED_MODEL, bad, 0.5, tmp_path / "x.pt", command="-")
    assert not (tmp_path / "x.pt").exists()


def test_fine_tuning_starts_from_the_given_checkpoint_and_refuses_another_architecture(tmp_path):
    import torch

    from grunet.checkpoint import save_checkpoint
    from grunet.errors import ConfigError
    from grunet.model import SMALL, GRUUNet
    from grunet.train_loop import initial_weights

    torch.manual_seed(3)
    model = GRUUNet(SMALL)
    save_checkpoint(tmp_path / "start.pt", model)
    weights = initial_weights(tmp_path / "start.pt", SMALL)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="another model config"):
        initial_weights(tmp_path / "start.pt", SMALL.replace(hidden=8))


@pytest.mark.parametrize("path", sorted(DEMO.parent.glob("train_*.yaml")), ids=lambda p: p.name)
def test_every_shipped_training_config_is_valid(path):
    cfg = load_config(path)  # unknown keys or wrong types raise ConfigError
    assert cfg["model"]["preset"] in ("small", "paper")
    assert cfg["epochs"] >= 1 and cfg["steps_per_epoch"] >= 1
    for root in cfg["data"]["extra_train_roots"]:
        assert Path(root).is_absolute()
