"""GRUU-Net model guarantees: shapes, gradients, max pooling of h, determinism, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grunet.checkpoint import load_checkpoint, save_checkpoint
from grunet.errors import CheckpointError
from grunet.model import PAPER, SMALL, GRUUNet, preset
from grunet.model.frdu import FRDU
from grunet.model.gruunet import pad_to_multiple
from grunet.model.layers import max_pool, upsample_bilinear

TINY = SMALL.replace(encoder_widths=(8, 8, 8), decoder_widths=(8, 8), hidden=4, growth=4)


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("size", [(37, 201), (1, 5), (64, 64)])
def test_output_aligns_with_input_for_any_size(channels, size):
    model = GRUUNet(TINY.replace(in_channels=channels)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, *size))
    assert out.shape == (2, 3, *size)


def test_every_parameter_receives_a_gradient():
    torch.manual_seed(0)
    model = GRUUNet(TINY).train()
    model(torch.randn(2, 1, 40, 40)).logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_hidden_state_is_reduced_by_max_pooling_not_bilinear():
    torch.manual_seed(0)
    unit = FRDU(4, 8, 4, TINY).eval()
    o = torch.randn(1, 4, 8, 8)
    h = torch.randn(1, TINY.hidden, 32, 32)
    seen = {}
    unit.fuse.register_forward_hook(lambda m, inp, out: seen.setdefault("x", inp[0]))
    with torch.no_grad():
        unit(o, h)
    h_low = seen["x"][:, 4:]
    assert torch.equal(h_low, F.max_pool2d(h, 4))
    bilinear = F.interpolate(h, size=(8, 8), mode="bilinear", align_corners=False)
    assert not torch.allclose(h_low, bilinear)


def test_gru_input_is_projected_to_hidden_channels_before_upsampling():
    unit = FRDU(4, 8, 4, TINY)
    assert unit.to_hidden.out_channels == TINY.hidden
    assert unit.gates_x.in_channels == TINY.hidden


def test_head_ends_in_1x1_conv_and_presets_match_the_paper():
    model = GRUUNet(TINY)
    assert model.head.classify.kernel_size == (1, 1)
    assert PAPER.encoder_widths + PAPER.decoder_widths == (64, 128, 256, 512, 512, 256, 128, 64, 32)
    assert PAPER.hidden == 32
    assert preset("small") == SMALL


def test_eval_mode_is_deterministic():
    model = GRUUNet(TINY).eval()
    x = torch.randn(1, 1, 48, 50)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = GRUUNet(TINY).eval()
    sha = save_checkpoint(tmp_path / "m.pt", model, {"note": "test"})
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint.sha256 == sha and checkpoint.metadata == {"note": "test"}
    x = torch.randn(1, 1, 33, 47)
    with torch.no_grad():
        assert torch.equal(model(x), checkpoint.build_model()(x))


def test_corrupt_checkpoint_error_names_the_file(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, GRUUNet(TINY))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_with_mismatching_weights_is_rejected(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, GRUUNet(TINY))
    payload = torch.load(path, weights_only=True)
    payload["config"]["hidden"] = 6
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def reference_forward(model: GRUUNet, x: torch.Tensor) -> torch.Tensor:
    """GRUU-Net written out plainly from the design's equations, on ``model``'s parameters.

    Every gate term separately, three upsamplings per unit, no fusion and no in-place ops: the
    model the shipped weights were trained as. The fast forward must compute the same numbers.
    """

    def up(t, f):
        return F.interpolate(t, scale_factor=f, mode="bilinear", align_corners=False)

    def unit_forward(unit, o, h):
        features = [unit.fuse(torch.cat([o, F.max_pool2d(h, unit.factor)], dim=1))]
        for layer in unit.dense.layers:
            features.append(layer.body(torch.cat(features, dim=1)))
        o = unit.transition(torch.cat(features, dim=1))
        gates = F.conv2d(unit.to_hidden(o), unit.gates_x.weight, unit.gates_x.bias, padding=1)
        xz, xr, xc = (up(g, unit.factor) for g in gates.chunk(3, dim=1))
        hz, hr = F.conv2d(h, unit.gru.gates_h.weight, padding=1).chunk(2, dim=1)
        z, r = torch.sigmoid(xz + hz), torch.sigmoid(xr + hr)
        candidate = xc + F.conv2d(r * h, unit.gru.candidate_h.weight, padding=1)
        candidate = F.leaky_relu(candidate, unit.gru.slope)
        return o, (1 - z) * h + z * candidate

    height, width = x.shape[-2:]
    h = model.stem(pad_to_multiple(x, model.cfg.stride))
    o = F.max_pool2d(h, 2)
    for i, unit in enumerate(model.encoder):
        o, h = unit_forward(unit, o if i == 0 else F.max_pool2d(o, 2), h)
    for unit in model.decoder:
        o, h = unit_forward(unit, up(o, 2), h)
    head = model.head
    return head.classify(F.leaky_relu(h + head.body(h), 0.2))[..., :height, :width]


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_forward_equals_the_plain_equations_on_the_shipped_weights(
    nuclei_timelapse, channels_last
):
    """Restructured forward (one upsampling per unit, fused conv+add, in place) == the plain
    model within 1e-4 in probabilities, fp32, both memory formats (the fused CPU kernels run
    on channels-last tensors)."""
    from grunet.checkpoint import SHIPPED_MODEL
    from grunet.preprocess import normalize_channels

    if SHIPPED_MODEL.is_file():
        model = load_checkpoint().build_model().eval()
    else:
        torch.manual_seed(0)
        model = GRUUNet(SMALL).eval()
    image = normalize_channels(nuclei_timelapse[7, 100:260, 50:250][None])  # 160 x 200, real
    x = torch.from_numpy(image[None].copy())
    with torch.inference_mode():
        expected = reference_forward(model, x).softmax(1)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        got = model(x).softmax(1)
    assert (got - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("factor", [2, 4, 32])
@pytest.mark.parametrize("size", [(3, 7), (1, 4)])  # edge rows clamped; a one-pixel axis
def test_fast_bilinear_upsampling_equals_torch_interpolate(factor, size):
    torch.manual_seed(0)
    x = torch.randn(2, 5, *size).contiguous(memory_format=torch.channels_last)
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    with torch.inference_mode():
        got = upsample_bilinear(x, factor)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("factor", [2, 4, 32])
@pytest.mark.parametrize("size", [(64, 96), (70, 99)])  # the second: not divisible (floored)
def test_fast_max_pooling_equals_torch_max_pool(dtype, factor, size):
    torch.manual_seed(0)
    x = torch.randn(2, 12, *size).to(dtype).contiguous(memory_format=torch.channels_last)
    x[0, 3, 5, 7] = float("nan")  # propagates like torch's kernel
    with torch.inference_mode():
        got = max_pool(x, factor)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, F.max_pool2d(x, factor), atol=0, rtol=0, equal_nan=True)


def test_bf16_forward_agrees_with_the_plain_fp32_equations(nuclei_timelapse):
    """The bf16 channels-last inference path (gate views copied dense, pooled by strided
    maxima) on any CPU: argmax agreement with the plain fp32 model ≥ 99.5 % on a real crop."""
    from grunet.checkpoint import SHIPPED_MODEL
    from grunet.preprocess import normalize_channels

    if SHIPPED_MODEL.is_file():
        model = load_checkpoint().build_model().eval()
    else:
        torch.manual_seed(0)
        model = GRUUNet(SMALL).eval()
    image = normalize_channels(nuclei_timelapse[7, 100:260, 50:250][None])
    x = torch.from_numpy(image[None].copy())
    with torch.inference_mode():
        expected = reference_forward(model, x).softmax(1)
        fast = model.to(torch.bfloat16, memory_format=torch.channels_last)
        got = fast(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    got = got.float().softmax(1)
    assert (got.argmax(1) == expected.argmax(1)).float().mean().item() >= 0.995
    assert (got - expected).abs().mean().item() < 0.01
