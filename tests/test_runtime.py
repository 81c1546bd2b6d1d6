"""The inference fast path: agrees with fp32, falls back cleanly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grunet.model import PAPER, SMALL, GRUUNet
from grunet.preprocess import normalize_channels
from grunet.runtime import COMPILE_MIN_PIXELS, has_cxx_compiler, prepare_model, should_compile

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fast_path_agrees_with_fp32_on_a_real_image(nuclei_timelapse):
    """bf16 channels-last vs fp32 argmax agreement ≥ 99.5% (the shipped model when present)."""
    from grunet.checkpoint import SHIPPED_MODEL, load_checkpoint

    if SHIPPED_MODEL.is_file():
        model = load_checkpoint().build_model()
    else:
        torch.manual_seed(0)
        model = GRUUNet(SMALL).eval()
    image = normalize_channels(nuclei_timelapse[3, :192, :256][None])
    x = torch.from_numpy(image[None].copy())
    reference = prepare_model(model, "cpu", fast=False)(x)
    fast = prepare_model(model, "cpu", fast=True, compile=False)
    out = fast(x)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    agreement = (out.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agreement >= 0.995, agreement
    diff = (out.softmax(1) - reference.softmax(1)).abs().max().item()
    assert diff < 0.25


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    torch.manual_seed(0)
    model = GRUUNet(SMALL.replace(encoder_widths=(8, 8), decoder_widths=(8,), hidden=4)).eval()

    def broken_compile(*args, **kwargs):
        def compiled(x):
            raise RuntimeError("inductor: no working C++ compiler found")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    prepared = prepare_model(model, "cpu", fast=True, compile=True)
    x = torch.rand(1, 1, 32, 32)
    with pytest.warns(RuntimeWarning, match="running the model eagerly"):
        out = prepared(x)
    assert not prepared.compiled
    np.testing.assert_array_equal(out.numpy(), prepared(x).numpy())


def test_compile_auto_only_for_large_jobs_on_a_gpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not should_compile(cpu, "auto", None)
    assert not should_compile(cpu, "auto", 511 * 511 * 30)  # the demo time-lapse
    small, paper = GRUUNet(SMALL), GRUUNet(PAPER)
    assert not should_compile(cpu, "auto", 10 * COMPILE_MIN_PIXELS, small)  # eager is faster
    assert should_compile(cpu, "auto", COMPILE_MIN_PIXELS, paper) == has_cxx_compiler()
    assert should_compile(cuda, "auto", COMPILE_MIN_PIXELS)
    assert not should_compile(cuda, "auto", 511 * 511 * 30)
    assert should_compile(cpu, True, None)
    assert not should_compile(cpu, False, 10 * COMPILE_MIN_PIXELS)


def test_compiled_kernels_go_to_the_grunet_cache_folder(tmp_path, monkeypatch):
    from grunet.runtime import cache_dir

    monkeypatch.setenv("GRUNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: model)  # eager stands in
    assert cache_dir() == tmp_path / "cache"
    model = GRUUNet(SMALL.replace(encoder_widths=(8, 8), decoder_widths=(8,), hidden=4)).eval()
    assert prepare_model(model, "cpu", compile=True).compiled
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")


def test_the_fast_inference_model_traces_as_one_graph_for_torch_compile():
    """`--compile yes` compiles the whole network: no graph breaks (the GRU's in-place
    ``out=`` writes into channels-last tensors once broke it 13 times, and dynamo then
    compiled each unit on its own until its recompile limit)."""
    model = GRUUNet(SMALL.replace(in_channels=1)).eval()
    prepared = prepare_model(model, "cpu", fast=True, compile=False)
    x = torch.rand(1, 1, 64, 64, dtype=prepared.dtype or torch.float32)
    with torch.inference_mode():
        explained = torch._dynamo.explain(prepared.model)(
            x.contiguous(memory_format=torch.channels_last)
        )
    assert explained.graph_break_count == 0, explained.break_reasons


@pytest.fixture
def fresh_bf16_check():
    from grunet.runtime import cpu_has_fast_bf16

    cpu_has_fast_bf16.cache_clear()
    yield cpu_has_fast_bf16
    cpu_has_fast_bf16.cache_clear()


def _x86_with_onednn_bf16(monkeypatch, *, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)


def test_emulated_bf16_of_plain_avx512_cpus_keeps_the_fp32_path(monkeypatch, fresh_bf16_check):
    """Skylake / Cascade Lake: oneDNN accepts bf16 by emulating it, 2× slower than fp32."""
    from grunet.runtime import autocast_dtype

    _x86_with_onednn_bf16(monkeypatch, avx512_bf16=False, amx=False)
    assert not fresh_bf16_check()
    assert autocast_dtype(torch.device("cpu")) is None


@pytest.mark.parametrize(("avx512_bf16", "amx"), [(True, False), (False, True)])
def test_native_bf16_cpus_take_the_bf16_path(monkeypatch, fresh_bf16_check, avx512_bf16, amx):
    _x86_with_onednn_bf16(monkeypatch, avx512_bf16=avx512_bf16, amx=amx)
    assert fresh_bf16_check()
    fresh_bf16_check.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")  # a cap below the bf16 instructions
    assert not fresh_bf16_check()


def test_folded_batch_norms_give_the_same_outputs_and_leave_the_model_alone():
    """The fast path's conv+BN folding on a copy: same fp32 outputs, the caller's network (its
    weights and its norms) untouched, the copy's weights its own."""
    from grunet.runtime import fold_batch_norms

    torch.manual_seed(0)
    model = GRUUNet(SMALL)
    with torch.no_grad():  # trained-looking running statistics, not the identity at init
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batch_norms(model)
    norms = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) < sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), atol=1e-4)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with torch.no_grad():
        next(folded.parameters()).add_(1.0)
    assert torch.equal(next(model.parameters()), before[next(iter(model.state_dict()))])
