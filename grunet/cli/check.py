"""``grunet check``: validate every input up front; one line per bad file, exit 2 if any."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check",
        help="validate inputs before a long run",
        description=(
            "Open and read every input completely (streamed) and report each bad one on its own "
            "line: unreadable, truncated or corrupt files, unsupported shapes or pixel types, "
            "NaN/inf values, label images that do not match. Every scene of a multi-scene file "
            "(multi-series TIFF, CZI/ND2/LIF scenes) is checked. With --model (or --channels), "
            "also that the model can read each input's channels. Exit 2 if any input is bad."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or zarr stores")
    parser.add_argument("--axes", help="axes of the inputs as letters of TCZYX, e.g. TYX")
    parser.add_argument("--scene", help="check only this scene (index or name) of each input")
    parser.add_argument(
        "--labels", nargs="+", metavar="LABELS", help="label images, one per input, in order"
    )
    parser.add_argument(
        "--model",
        help="also check that this checkpoint ('shipped': grunet's own) reads each input's "
        "channels (default: only with --channels, the shipped model)",
    )
    parser.add_argument(
        "--channels", help="comma-separated channel names or indices the model reads, as for run"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per good input too")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from grunet.errors import GrunetError, InputError
    from grunet.io.convert import check_input, input_samples, release_files

    if args.labels is not None and len(args.labels) != len(args.inputs):
        raise InputError(
            None, f"--labels needs one label image per input ({len(args.inputs)} inputs)"
        )
    labels = args.labels or [None] * len(args.inputs)
    reads_channels = _channel_check(args)
    bad = 0
    for i, (path, label) in enumerate(
        tqdm(list(zip(args.inputs, labels)), desc="checking", unit="input", file=sys.stderr)
    ):
        release_files(i)
        try:
            scenes = [s.scene for s in input_samples(path, args.scene)]
            for scene in scenes:
                report = check_input(path, axes=args.axes, labels=label, scene=scene)
                if reads_channels is not None:
                    reads_channels(report.channel_names, path)
                if args.verbose or report.constant_channels or report.warnings:
                    tqdm.write(report.summary(), file=sys.stdout)
        except GrunetError as err:
            bad += 1
            tqdm.write(str(err), file=sys.stdout)
    n = len(args.inputs)
    if bad:
        print(f"grunet check: {bad} of {n} input(s) are bad", file=sys.stderr)
        return 2
    print(f"grunet check: all {n} input(s) ok")
    return 0


def _channel_check(args: argparse.Namespace):
    """A check that the model reads an input's channels (None without --model / --channels)."""
    if args.model is None and args.channels is None:
        return None
    from grunet.predict import Predictor, select_channels

    model = None if args.model in (None, "shipped") else args.model
    predictor = Predictor.from_checkpoint(model, device="cpu")
    wanted = args.channels.split(",") if args.channels else None
    return lambda names, path: select_channels(wanted, names, path, predictor)
