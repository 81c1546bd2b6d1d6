"""Tiled inference guarantees: tiles agree with whole-image inference, any size, chunk-aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

import grunet
from grunet.checkpoint import SHIPPED_MODEL, load_checkpoint, save_checkpoint
from grunet.errors import ConfigError, InputError
from grunet.model import SMALL, GRUUNet
from grunet.predict import Predictor, axis_windows, predict_store, taper
from grunet.preprocess import normalize_channels

TINY = SMALL.replace(encoder_widths=(8, 8, 8), decoder_widths=(8, 8), hidden=4, growth=4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    """The shipped model where it exists (else seeded random weights: a weaker check)."""
    if SHIPPED_MODEL.is_file():
        return Predictor.from_checkpoint(load_checkpoint(), device="cpu", compile=False)
    torch.manual_seed(0)
    return Predictor(GRUUNet(SMALL), device="cpu", compile=False)


@pytest.fixture(scope="module")
def plane(nuclei_timelapse) -> np.ndarray:
    """A real 511 x 511 frame of the nuclei time-lapse, normalised, (1, Y, X)."""
    return normalize_channels(nuclei_timelapse[5][None])


def test_tiled_probabilities_match_whole_image(predictor, plane):
    """Tiles of 256 px with a 64 px halo: ≥ 99.9% argmax agreement, |Δp| ≤ 0.15 on all but
    1 in 10,000 pixels and ≤ 0.25 everywhere.

    No halo makes tiles exact: the network's theoretical receptive field (3×3 convs at 1/32
    scale, a GRU refining h at every scale) is wider than any practical window. Its *effective*
    receptive field is small, and blending keeps seam pixels on predictions that had ≥ halo
    context. Measured on real 511² frames 5 and 20 (99.99th percentile / max of |Δp|): stage 5
    (shipped) halo 64 → agreement 99.97-99.98 %, 0.088-0.127 / 0.144-0.215; halo 32 → 99.92-99.96 %,
    0.120-0.234 / 0.203-0.316; stage 3, halo 64 → 99.91-99.93 %, 0.103-0.148 / 0.173-0.190. The
    default tile (1024, halo 32) has 4× fewer seam pixels than this test's 256.
    """
    whole = predictor.predict_plane(plane, tile=4096)
    tiled = predictor.predict_plane(plane, tile=256, halo=64)
    assert tiled.shape == whole.shape == (3, *plane.shape[1:])
    agreement = (tiled.argmax(0) == whole.argmax(0)).mean()
    assert agreement >= 0.999, agreement
    change = np.abs(tiled - whole)
    assert np.quantile(change, 0.9999) <= 0.15 and change.max() <= 0.25
    np.testing.assert_allclose(tiled.sum(0), 1.0, atol=1e-4)


def test_image_within_one_window_equals_whole_image_inference(predictor, plane):
    crop = plane[:, :100, :90]
    whole = predictor.prepared().probabilities(torch.from_numpy(crop[None].copy()))[0].numpy()
    np.testing.assert_allclose(predictor.predict_plane(crop, tile=64, halo=64), whole, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (37, 1), (3, 200), (65, 33)])
def test_tiny_thin_and_odd_images_give_probabilities_of_the_same_shape(shape):
    torch.manual_seed(0)
    predictor = Predictor(GRUUNet(TINY), device="cpu", compile=False)
    image = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    probs = predictor.predict_plane(image, tile=32, halo=32)
    assert probs.shape == (3, *shape)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)


def test_windows_cover_every_pixel_with_full_context_and_blend_to_one():
    size, tile, halo = 1000, 256, 32
    windows = axis_windows(0, size, size, tile, halo)
    assert windows[0][0] == 0 and windows[-1][1] == size
    for core in range(0, size, tile):  # every core lies in a window with halo context or border
        assert any(
            (a == 0 or a <= core - halo) and (b == size or b >= min(core + tile, size) + halo)
            for a, b in windows
        )
    total = np.zeros(size)
    for a, b in windows:
        total[a:b] += taper(a, b, size, halo)
    assert total.min() >= 1.0  # every pixel has a window at full weight
    ramp = taper(100, 400, size, 32)
    assert ramp[0] < 0.01 and ramp[32] == 1.0 and np.all(np.diff(ramp[:33]) > 0)  # smooth
    assert taper(0, 300, 300, 32).min() == 1.0  # no taper at the image border


def test_small_image_is_one_window():
    assert axis_windows(0, 300, 300, 1024, 32) == [(0, 300)]
    assert axis_windows(0, 1050, 1050, 1024, 32) == [(0, 1050)]


@pytest.fixture
def store(tmp_path, nuclei_timelapse):
    from grunet.io import ImageStack, write_image

    image = nuclei_timelapse[:2, :150, :130][:, None, None]  # (T=2, C=1, Z=1, Y, X) real
    return write_image(tmp_path / "a.ome.zarr", ImageStack(image), chunks=64)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, GRUUNet(TINY), {"segmentation": {"seed_threshold": 0.6}})
    return path


@pytest.fixture
def two_network_checkpoint(tmp_path):
    """A checkpoint whose second network predicts images upscaled x2 or more."""
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "low.pt", GRUUNet(TINY), {"segmentation": {"seed_threshold": 0.4}})
    path = tmp_path / "two.pt"
    low = load_checkpoint(tmp_path / "low.pt")
    save_checkpoint(path, GRUUNet(TINY), {}, low_magnification_model=low, min_factor=2.0)
    return path, tmp_path / "low.pt"


def test_low_magnification_network_predicts_what_is_upscaled_past_its_factor(
    tmp_path, store, two_network_checkpoint
):
    """Below min_factor the main network predicts, from it on the stored one, on every path
    (a plane, a store, the API); the store records which network and its thresholds."""
    path, low_path = two_network_checkpoint
    both = Predictor.from_checkpoint(path, device="cpu", compile=False)
    main = Predictor(load_checkpoint(path).build_model(), device="cpu", compile=False)
    low = Predictor.from_checkpoint(low_path, device="cpu", compile=False)
    plane = np.random.default_rng(0).random((1, 80, 70)).astype(np.float32)
    for factor, network in ((1.0, main), (1.9, main), (2.0, low), (3.0, low)):
        np.testing.assert_array_equal(
            both.predict_plane(plane, factor=factor), network.predict_plane(plane, factor=factor)
        )
    assert both.for_factor(1.9) is both
    stored = {}
    for name, model, diameter in (
        ("main", path, 17.0),
        ("low", path, 6.0),
        ("alone", low_path, 6.0),
    ):
        out = predict_store(  # D0 = 17 px: x1 and x2.8
            store, tmp_path / f"{name}.probs.zarr", model=model, diameter=diameter, progress=False
        )
        stored[name] = zarr.open_group(str(out), mode="r")
    attrs = stored["low"].attrs["grunet"]
    assert attrs["network"] == "low_magnification"
    assert attrs["network_sha256"] == load_checkpoint(low_path).sha256
    assert attrs["model_sha256"] == load_checkpoint(path).sha256
    assert attrs["segmentation"]["seed_threshold"] == 0.4
    assert attrs["object_scale"]["network"] == "low_magnification"  # on to labels and tables
    assert "network" not in stored["main"].attrs["grunet"]
    np.testing.assert_array_equal(stored["low"]["probs"][:], stored["alone"]["probs"][:])
    image = zarr.open_array(str(store / "0"), mode="r")[0, :, 0]
    np.testing.assert_array_equal(
        grunet.segment(image[0], both, diameter=6.0), grunet.segment(image[0], low, diameter=6.0)
    )


def test_store_probabilities_are_chunk_aligned_float16_with_provenance(
    tmp_path, store, tiny_checkpoint
):
    out = predict_store(
        store, tmp_path / "a.probs.zarr", model=tiny_checkpoint, tile=64, halo=32, progress=False
    )
    group = zarr.open_group(str(out), mode="r")
    probs = group["probs"]
    assert probs.shape == (2, 3, 1, 150, 130)
    assert probs.chunks == (1, 3, 1, 64, 64)  # the image's chunks
    assert probs.dtype == np.float16
    attrs = group.attrs["grunet"]
    checkpoint = load_checkpoint(tiny_checkpoint)
    assert attrs["model_sha256"] == checkpoint.sha256
    assert attrs["source"] == str(store)
    assert (attrs["tile"], attrs["halo"]) == (64, 32)
    assert attrs["segmentation"] == {"seed_threshold": 0.6}
    # the same as predicting the plane in memory with the store's normalisation
    from grunet.io import open_store

    stack = open_store(store)
    raw = np.asarray(stack.data[1, :, 0])
    expected = Predictor.from_checkpoint(checkpoint, device="cpu", compile=False).predict_plane(
        normalize_channels(raw, stack.normalization_ranges), tile=4096
    )
    got = probs[1, :, 0].astype(np.float32)
    assert (got.argmax(0) == expected.argmax(0)).mean() >= 0.999
    assert np.abs(got - expected).max() < 0.05


def test_channel_mismatch_names_the_store_and_the_model(tmp_path, store):
    torch.manual_seed(0)
    path = tmp_path / "rgb.pt"
    save_checkpoint(path, GRUUNet(TINY.replace(in_channels=3)))
    with pytest.raises(InputError) as err:
        predict_store(store, tmp_path / "p.zarr", model=path, progress=False)
    message = str(err.value)
    assert str(store) in message and str(path) in message
    assert "1 channel" in message and "expects 3" in message
    assert not (tmp_path / "p.zarr").exists()


def test_existing_output_needs_overwrite(tmp_path, store, tiny_checkpoint):
    out = tmp_path / "a.probs.zarr"
    predict_store(store, out, model=tiny_checkpoint, progress=False)
    with pytest.raises(InputError, match="--overwrite"):
        predict_store(store, out, model=tiny_checkpoint, progress=False)
    predict_store(store, out, model=tiny_checkpoint, overwrite=True, progress=False)


def test_bad_tiling_options_name_the_option():
    predictor = Predictor(GRUUNet(TINY), device="cpu", compile=False)
    with pytest.raises(ConfigError, match="tile"):
        predictor.predict_plane(np.zeros((1, 8, 8), np.float32), tile=0)
    with pytest.raises(ConfigError, match="halo"):
        predictor.predict_plane(np.zeros((1, 8, 8), np.float32), halo=-1)


def test_cli_predict_writes_the_store(tmp_path, store, tiny_checkpoint):
    from grunet.cli import main

    out = tmp_path / "cli.probs.zarr"
    code = main(["predict", str(store), "-o", str(out), "--model", str(tiny_checkpoint),
                 "--tile", "64", "--no-progress"])  # fmt: skip
    assert code == 0
    assert zarr.open_group(str(out), mode="r")["probs"].shape == (2, 3, 1, 150, 130)
    assert main(["predict", str(store), "-o", str(out), "--model", str(tiny_checkpoint)]) == 2


def test_distributed_scheduler_gives_the_same_probabilities(tmp_path, store, tiny_checkpoint):
    distributed = pytest.importorskip("distributed")
    local = predict_store(store, tmp_path / "local.zarr", model=tiny_checkpoint, tile=64,
                          progress=False)  # fmt: skip
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        remote = predict_store(store, tmp_path / "remote.zarr", model=tiny_checkpoint, tile=64,
                               scheduler=cluster.scheduler_address, progress=False)  # fmt: skip
    expected = zarr.open_group(str(local), mode="r")["probs"][:]
    np.testing.assert_array_equal(zarr.open_group(str(remote), mode="r")["probs"][:], expected)


def test_channels_option_selects_the_model_channels_by_name(tmp_path, nuclei_timelapse):
    from grunet.io import ImageStack, write_image

    frames = nuclei_timelapse[:1, :80, :70]
    two = np.stack([255 - frames, frames], axis=1)[:, :, None]  # (1, 2, 1, Y, X)
    store = write_image(tmp_path / "two.ome.zarr", ImageStack(two, channel_names=["bf", "dapi"]))
    torch.manual_seed(0)
    path = tmp_path / "one.pt"
    save_checkpoint(path, GRUUNet(TINY))
    with pytest.raises(InputError, match="2 channel"):
        predict_store(store, tmp_path / "p.zarr", model=path, progress=False)
    out = predict_store(store, tmp_path / "p.zarr", model=path, channels=["dapi"], progress=False)
    assert zarr.open_group(str(out), mode="r").attrs["grunet"]["channel_names"] == ["dapi"]
    with pytest.raises(ConfigError, match="'gfp' is not a channel"):
        predict_store(store, tmp_path / "q.zarr", model=path, channels=["gfp"], progress=False)


def test_small_planes_of_a_stack_share_forward_passes_and_match_one_at_a_time(
    tmp_path, nuclei_3d, tiny_checkpoint, monkeypatch
):
    """The z-planes of a stack of small planes are batched; each plane's result is unchanged."""
    from grunet.io import ImageStack, open_store, write_image

    image = nuclei_3d[0][:6, :70, :60][None, None]  # (T=1, C=1, Z=6, Y, X) real nuclei
    store = write_image(tmp_path / "z.ome.zarr", ImageStack(image), chunks=64)
    checkpoint = load_checkpoint(tiny_checkpoint)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", compile=False)
    batches = []
    forward = Predictor._forward

    def counting(self, prepared, inputs):
        batches.append(len(inputs))
        return forward(self, prepared, inputs)

    monkeypatch.setattr(Predictor, "_forward", counting)
    out = predict_store(
        store,
        tmp_path / "z.probs.zarr",
        model=predictor,
        diameter=predictor.object_diameter,  # the model's own scale: no estimation passes
        progress=False,
    )
    assert batches == [6]  # one forward for the whole stack
    probs = zarr.open_group(str(out), mode="r")["probs"][0].astype(np.float32)
    stack = open_store(store)
    for z in range(6):
        raw = np.asarray(stack.data[0, :, z])
        expected = predictor.predict_plane(normalize_channels(raw, stack.normalization_ranges))
        np.testing.assert_allclose(probs[:, z], expected, atol=2e-3)


def test_float16_probabilities_round_as_numpy_does():
    """The stored float16 probabilities are numpy's rounding (nearest, ties to even) of the
    float32 ones, also for values between two float16 numbers and at the ends of [0, 1]."""
    from grunet.predict import as_float16

    rng = np.random.default_rng(0)
    values = rng.random((3, 67, 45), dtype=np.float32)
    values[0, 0, :4] = [0.0, 1.0, 6e-8, 1.0 - 2**-12]
    halfway = (np.float32(np.float16(0.5)) + np.float32(np.float16(0.5) + np.float16(2**-11))) / 2
    values[0, 1, 0] = halfway  # a tie
    assert np.array_equal(as_float16(values), values.astype(np.float16))
    assert as_float16(values).dtype == np.float16


def test_a_compiled_model_runs_a_shrunk_plane_at_its_largest_window(tmp_path, monkeypatch):
    """A compiled model runs every window of a plane at one padded shape (it compiles once per
    shape). When shrinking, a block's window is wider than a tile along one axis and shorter
    along the other, so that shape must be the layout's largest window: a tile-sized square
    padded this 2048² plane's two 640-664 × 1208 windows at ×0.59 to 1088 × 1216 (1.62× the
    pixels). ``torch.compile`` is replaced by a recorder of the shapes the model is run at."""
    from grunet.io import ImageStack, write_image
    from grunet.predict import largest_window, plan_scaled_blocks, scaled_block_size

    shapes: list[tuple[int, int]] = []

    def recording_compile(model, **kwargs):
        def run(x):
            shapes.append(tuple(x.shape[-2:]))
            return model(x)

        return run

    monkeypatch.setattr(torch, "compile", recording_compile)
    torch.manual_seed(0)
    predictor = Predictor(
        GRUUNet(TINY).eval(), device="cpu", compile=True, metadata={"object_diameter": 17.0}
    )
    image = np.random.default_rng(0).integers(0, 255, (1, 1, 1, 2048, 2048), dtype=np.uint8)
    store = write_image(tmp_path / "a.ome.zarr", ImageStack(image), chunks=1024)
    factor = 0.59
    predict_store(store, tmp_path / "a.probs.zarr", model=predictor, diameter=17.0 / factor)
    block = scaled_block_size((1024, 1024), 1024, factor, 32, (2048, 2048))
    layout = plan_scaled_blocks((2048, 2048), block, 1024, 32, factor)
    largest = largest_window(layout)
    assert largest[0] < 1024 < largest[1]  # the elongated windows this test is about
    stride = predictor.stride  # the network's pooling stride: windows are padded to it
    expected = {tuple(-(-n // stride) * stride for n in largest)}
    assert set(shapes) == expected, shapes

    distributed = pytest.importorskip("distributed")  # the same on a cluster's workers
    shapes.clear()
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, predictor.model, {"object_diameter": 17.0})
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        predict_store(store, tmp_path / "b.probs.zarr", model=checkpoint, compile=True,
                      diameter=17.0 / factor, scheduler=cluster.scheduler_address,
                      progress=False)  # fmt: skip
    assert set(shapes) == expected, shapes


# ------------------------------------------------------------------ test-time augmentation


def _plain_and_augmented(predictor: Predictor) -> tuple[Predictor, Predictor]:
    """The same network without and with test-time augmentation (shared weights)."""
    plain = Predictor(predictor.model, device="cpu", compile=False, metadata=predictor.metadata)
    augmented = Predictor(
        predictor.model, device="cpu", compile=False, metadata=predictor.metadata, augment=True
    )
    return plain, augmented


def test_augmented_probabilities_are_the_mean_over_the_mirror_images(predictor, plane):
    """`augment` averages the predictions of a window and its three mirror images, each flipped
    back; a mirrored image then gets exactly the mirrored probabilities (micrographs have no
    up, down, left or right)."""
    plain, augmented = _plain_and_augmented(predictor)
    crop = plane[:, 40:200, 300:500]  # one window: window flips are image flips
    expected = np.mean(
        [
            np.flip(plain.predict_plane(np.flip(crop, axes).copy()), axes)
            for axes in [(), (2,), (1,), (1, 2)]
        ],
        axis=0,
    )
    got = augmented.predict_plane(crop)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - plain.predict_plane(crop)).max() > 0.01  # it does change something
    for axes in [(2,), (1,), (1, 2)]:
        mirrored = augmented.predict_plane(np.flip(crop, axes).copy())
        np.testing.assert_allclose(np.flip(mirrored, axes), got, atol=1e-5)
    assert augmented.describe()["augment"] == 4 and plain.describe()["augment"] == 1


def test_augmented_awkward_shapes_keep_their_shape_and_mirror_exactly():
    """Randomly drawn thin and odd plane shapes (padded unevenly inside the network): augmented
    probabilities keep the plane's shape, sum to 1 and mirror with the image."""
    rng = np.random.default_rng(7)
    torch.manual_seed(0)
    predictor = Predictor(GRUUNet(TINY), device="cpu", compile=False, augment=True)
    for _ in range(6):
        shape = tuple(int(n) for n in rng.integers(1, 90, 2))
        image = rng.random((1, *shape), dtype=np.float32)
        probs = predictor.predict_plane(image, tile=96, halo=32)  # one window
        assert probs.shape == (3, *shape), shape
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
        for axes in [(1,), (2,)]:
            mirrored = predictor.predict_plane(np.flip(image, axes).copy(), tile=96, halo=32)
            np.testing.assert_allclose(np.flip(mirrored, axes), probs, atol=1e-5)


def test_the_diameter_estimate_is_not_augmented(tmp_path, plane):
    """A checkpoint without a scale model estimates with its own network: with test-time
    augmentation on, the estimate's passes are still single passes (the same passes as without
    it, at a quarter of the cost), as they are for a checkpoint that carries a scale model."""
    from grunet.scale import estimate_diameter

    shipped = load_checkpoint()
    alone = tmp_path / "alone.pt"
    save_checkpoint(alone, shipped.build_model(), shipped.metadata)  # no scale model inside
    plain = Predictor.from_checkpoint(alone, device="cpu", compile=False)
    augmented = Predictor.from_checkpoint(alone, device="cpu", compile=False, augment=True)
    crop = plane[:, :256, :256]
    assert not np.array_equal(
        augmented.predict_plane(crop, tile=256, halo=0), plain.predict_plane(crop, tile=256, halo=0)
    )
    found, expected = estimate_diameter(augmented, [plane]), estimate_diameter(plain, [plane])
    np.testing.assert_array_equal(np.array(found.passes[0]), np.array(expected.passes[0]))
    assert augmented.augment  # the caller's predictor keeps its setting


def test_augmented_tiles_match_the_whole_augmented_image(predictor, plane):
    """Test-time augmentation keeps the seam guarantee of plain prediction (same bounds)."""
    _, augmented = _plain_and_augmented(predictor)
    whole = augmented.predict_plane(plane, tile=4096)
    tiled = augmented.predict_plane(plane, tile=256, halo=64)
    assert (tiled.argmax(0) == whole.argmax(0)).mean() >= 0.999
    change = np.abs(tiled - whole)
    assert np.quantile(change, 0.9999) <= 0.15 and change.max() <= 0.25


def test_scene_models_mirror_left_right_only():
    """Street scenes have a sky: a semantic model is never run upside down."""
    cfg = TINY.replace(classes=4, in_channels=3)
    semantic = Predictor(GRUUNet(cfg), device="cpu", metadata={"task": "semantic"}, augment=True)
    assert semantic.mirrors == ((), (-1,))
    assert Predictor(GRUUNet(TINY), device="cpu", augment=True).mirrors == (
        (), (-1,), (-2,), (-2, -1)
    )  # fmt: skip
    assert Predictor(GRUUNet(TINY), device="cpu").mirrors == ((),)


def test_augment_option_reaches_prediction_and_its_provenance(tmp_path, store, tiny_checkpoint):
    """`grunet predict --augment`, `predict_store(augment=True)` and `grunet.segment(augment=)`
    all predict with the mirror images, and the probabilities' attrs and the per-cell tables'
    provenance (`grunet run --augment`) say so."""
    from grunet.cli import main

    out = tmp_path / "cli.probs.zarr"
    code = main(["predict", str(store), "-o", str(out), "--model", str(tiny_checkpoint),
                 "--tile", "64", "--diameter", "17", "--augment", "--no-progress"])  # fmt: skip
    assert code == 0
    api = predict_store(store, tmp_path / "api.probs.zarr", model=tiny_checkpoint, tile=64,
                        diameter=17, augment=True, progress=False)  # fmt: skip
    plain = predict_store(store, tmp_path / "plain.probs.zarr", model=tiny_checkpoint, tile=64,
                          diameter=17, progress=False)  # fmt: skip
    groups = [zarr.open_group(str(path), mode="r") for path in (out, api, plain)]
    assert [g.attrs["grunet"]["augment"] for g in groups] == [4, 4, 1]
    np.testing.assert_array_equal(groups[0]["probs"][:], groups[1]["probs"][:])
    assert np.abs(groups[1]["probs"][:].astype(np.float32) - groups[2]["probs"][:]).max() > 1e-3

    from grunet.measure import read_provenance
    from grunet.pipeline import run_pipeline

    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "frame.tif", zarr.open_array(str(store / "0"))[0, 0, 0])
    run_pipeline([tmp_path / "frame.tif"], tmp_path / "run", model=tiny_checkpoint,
                 diameter=17, augment=True, progress=False)  # fmt: skip
    assert read_provenance(tmp_path / "run" / "cells" / "frame.parquet")["augment"] == 4

    model = grunet.load_model(tiny_checkpoint, device="cpu")
    image = zarr.open_array(str(store / "0"), mode="r")[0, 0, 0]
    labels = grunet.segment(image, model, diameter=17, augment=True)
    assert not model.augment  # the caller's predictor keeps its setting
    augmented = grunet.load_model(tiny_checkpoint, device="cpu", augment=True)
    np.testing.assert_array_equal(labels, grunet.segment(image, augmented, diameter=17))
