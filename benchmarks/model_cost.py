"""Cost of the GRUU-Net presets: parameters, GFLOP per megapixel, forward throughput (MPix/s).

Usage:
    python benchmarks/model_cost.py                      # paper + small, 512² and 1024², 2 threads
    python benchmarks/model_cost.py --presets small --sizes 512 --compile
    python benchmarks/model_cost.py --presets small --sizes 1024 --ablations --no-fp32
    ONEDNN_MAX_CPU_ISA=AVX512_CORE ATEN_CPU_CAPABILITY=avx512 \
        python benchmarks/model_cost.py --presets small --sizes 1024 --bf16   # a Skylake-class CPU

For each preset it prints parameters, GFLOP/MPix (``torch.utils.flop_counter``, 1 multiply-add =
2 FLOP), and forward throughput in MPix/s (batch 1, best of ``--repeats`` after one warm-up) in
plain fp32 (NCHW) and on the fast path of :func:`grunet.runtime.prepare_model` (channels-last +
a bf16 model where the CPU has native bf16; AMP on CUDA), optionally compiled. On a machine with
CUDA the same is measured on the GPU. Timings on a shared machine are noisy: rerun when idle.
"""

from __future__ import annotations

import grunet  # noqa: F401  # isort: skip  (first: OpenMP wait policy before torch loads)
import argparse
import copy
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from grunet.memory import keep_large_buffers_off_heap
from grunet.model import GRUUNet, preset
from grunet.runtime import autocast_dtype, cpu_has_fast_bf16, prepare_model


def gflop_per_mpix(model: torch.nn.Module, size: int = 512) -> float:
    x = torch.rand(1, model.cfg.in_channels, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9 / (size * size / 1e6)


def throughput(
    run, size: int, channels: int, device: torch.device, repeats: int, make_input=None
) -> float:
    """MPix/s of ``run`` on a (1, C, size, size) input; best of ``repeats`` after a warm-up.

    Also records in ``CPU_TIME`` the MPix per CPU-second of this process (all its threads),
    which other processes on a shared machine distort far less than wall time.
    """
    x = make_input() if make_input else torch.rand(1, channels, size, size, device=device)
    run(x)
    best = best_cpu = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        run(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    CPU_TIME["last"] = size * size / 1e6 / max(best_cpu, 1e-9)
    return size * size / 1e6 / best


CPU_TIME: dict[str, float] = {}


def conv_peak_gflops(device: torch.device, dtype: torch.dtype | None, repeats: int) -> float:
    """Best GFLOP/s of plain 3×3 convs (C→C channels, C·size = 32k, channels-last) on ``device``.

    A roofline for the presets: a network of G GFLOP/MPix cannot run faster than peak / G
    MPix/s, since convolutions are nearly all of its arithmetic. Narrow full-resolution convs
    run well below this peak, so real networks stay further under it.
    """
    dtype = dtype or torch.float32
    best = best_cpu = 0.0
    for channels, size in ((32, 1024), (64, 512), (128, 256), (256, 128)):
        x = torch.rand(1, channels, size, size, device=device, dtype=dtype)
        weight = torch.rand(channels, channels, 3, 3, device=device, dtype=dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            mpix = throughput(
                lambda t, w=weight: torch.nn.functional.conv2d(t, w, padding=1),
                size, channels, device, repeats, make_input=lambda x=x: x,
            )  # fmt: skip
        best = max(best, mpix * 1e6 * 2 * 9 * channels * channels / 1e9)
        best_cpu = max(best_cpu, CPU_TIME["last"] * 1e6 * 2 * 9 * channels * channels / 1e9)
    CPU_TIME[f"peak {device.type}"] = best_cpu
    return best


def ablations(model: torch.nn.Module, size: int, repeats: int, rounds: int = 3) -> None:
    """The eager CPU fast path with each of its restructurings undone in turn, interleaved.

    Figures are MPix per CPU-second (best per variant over ``rounds`` alternating rounds).
    """
    import contextlib

    import torch.nn.functional as F

    from grunet.model import convgru, frdu, gruunet

    def torch_upsample(x, factor, pool=None):
        return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)

    @contextlib.contextmanager
    def patched(module, name, value):
        saved = getattr(module, name)
        setattr(module, name, value)
        try:
            yield
        finally:
            setattr(module, name, saved)

    def autocast_instead(prepared):
        prepared.model = prepared.model.float()
        prepared._forward, prepared.cast = prepared.model, False
        return prepared

    variants = {
        "fast path (all)": (contextlib.nullcontext, lambda p: p),
        "- lerp upsampling": (
            lambda: _stack(patched(frdu, "upsample_bilinear", torch_upsample),
                           patched(gruunet, "upsample_bilinear", torch_upsample)),
            lambda p: p,
        ),
        "- fused conv+add": (lambda: patched(convgru, "_HAS_FUSED_CONV", False), lambda p: p),
        "- buffers handed on": (lambda: patched(gruunet, "eager_inference", lambda: False),
                                lambda p: p),
        "- bf16 model (autocast)": (contextlib.nullcontext, autocast_instead),
    }  # fmt: skip
    cpu = torch.device("cpu")
    best = dict.fromkeys(variants, 0.0)
    for _ in range(rounds):
        for name, (context, adjust) in variants.items():
            prepared = adjust(prepare_model(copy.deepcopy(model), cpu, fast=True, compile=False))
            with context():
                throughput(prepared, size, model.cfg.in_channels, cpu, repeats)
            best[name] = max(best[name], CPU_TIME["last"])
    for name, mpix in best.items():
        print(f"  ablation {size}² {name:28s} {mpix:6.3f} MPix/CPU-s "
              f"({mpix / best['fast path (all)']:.2f}× the fast path)")  # fmt: skip


def in_bf16(prepared):
    """The CPU fast path with the network cast to bf16 even where grunet keeps fp32 (CPUs
    that only emulate bf16, e.g. AVX512 without AVX512-BF16): what the fast path would cost
    there if it took bf16."""
    prepared.model = prepared.model.to(torch.bfloat16)
    prepared._forward, prepared.dtype, prepared.cast = prepared.model, torch.bfloat16, True
    return prepared


def _stack(*contexts):
    import contextlib

    stack = contextlib.ExitStack()
    for context in contexts:
        stack.enter_context(context)
    return stack


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "small"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--no-fp32", action="store_true", help="skip the fp32 reference")
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="also time the CPU fast path with each restructuring undone",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="also time the network in bf16 where the fast path keeps fp32 (emulated bf16)",
    )
    parser.add_argument(
        "--heap",
        action="store_true",
        help="glibc's default allocation (the commands map buffers >= 4 MiB one by one)",
    )
    args = parser.parse_args(argv)
    if not args.heap:
        keep_large_buffers_off_heap()  # the memory policy of the grunet commands
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (others' jobs skew it)")
    print(f"torch {torch.__version__}, {args.threads} CPU threads, native CPU bf16: "
          f"{cpu_has_fast_bf16()}, CUDA: {torch.cuda.is_available()}")  # fmt: skip
    peaks = {d: conv_peak_gflops(d, autocast_dtype(d), args.repeats) for d in devices}
    for device, peak in peaks.items():
        print(f"{device.type} best 3×3 conv, {autocast_dtype(device) or 'fp32'} channels-last: "
              f"{peak:.0f} GFLOP/s, {CPU_TIME[f'peak {device.type}']:.0f} GFLOP per CPU-s "
              "(the roofline below)")  # fmt: skip
    for name in args.presets:
        torch.manual_seed(0)
        model = GRUUNet(preset(name)).eval()
        params = sum(p.numel() for p in model.parameters())
        gflop = gflop_per_mpix(model)
        print(f"\n[{name}] parameters {params / 1e6:.3f} M, {gflop:.0f} GFLOP/MPix")
        for device, peak in peaks.items():
            ceiling = peak / gflop
            print(f"  {device.type:4s} roofline (conv peak / GFLOP per MPix) {ceiling:6.3f} MPix/s")
        for device in devices:
            as_is = lambda p: p  # noqa: E731
            modes = [] if args.no_fp32 else [("fp32", dict(fast=False), as_is)]
            dtype = autocast_dtype(device)
            fast = f"fast ({'channels-last ' if device.type != 'mps' else ''}{dtype or 'fp32'})"
            modes.append((fast, dict(fast=True, compile=False), as_is))
            if args.compile:
                modes.append((fast + " compiled", dict(fast=True, compile=True), as_is))
            if args.bf16 and device.type == "cpu" and dtype is None:
                bf16 = ("channels-last bf16 (emulated?)", dict(fast=True, compile=False), in_bf16)
                modes.append(bf16)
            for label, options, adjust in modes:
                start = time.perf_counter()
                prepared = adjust(prepare_model(copy.deepcopy(model), device, **options))
                for size in args.sizes:
                    mpix = throughput(prepared, size, model.cfg.in_channels, device, args.repeats)
                    note = f" (first call incl. compile {time.perf_counter() - start:.0f} s)" \
                        if options.get("compile") and size == args.sizes[0] else ""  # fmt: skip
                    share = mpix * gflop / peaks[device]
                    share_cpu = CPU_TIME["last"] * gflop / CPU_TIME[f"peak {device.type}"]
                    print(f"  {device.type:4s} {label:32s} {size:5d}²  {mpix:6.3f} MPix/s "
                          f"{100 * share:5.1f} % of roofline ({100 * share_cpu:5.1f} % in "
                          f"CPU time){note}", flush=True)  # fmt: skip
        if args.ablations:
            ablations(model, args.sizes[-1], args.repeats)


if __name__ == "__main__":
    main()
