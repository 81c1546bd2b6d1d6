"""GRUU-Net model guarantees: shapes, gradients, max pooling of h, determinism, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grunet.checkpoint import load_checkpoint, save_checkpoint
from grunet.errors import CheckpointError
from grunet.model import PAPER, SMALL, GRUUNet, preset
from grunet.model.convgru import split_conv
from grunet.model.frdu import FRDU

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


def test_split_conv_gives_the_chunks_of_the_whole_conv_as_dense_tensors():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 9, 3, padding=1)
    x = torch.randn(2, 6, 17, 23).contiguous(memory_format=torch.channels_last)
    parts = split_conv(conv, x, 3)
    for part, chunk in zip(parts, conv(x).chunk(3, dim=1)):
        torch.testing.assert_close(part, chunk)
        assert part.is_contiguous(memory_format=torch.channels_last)
