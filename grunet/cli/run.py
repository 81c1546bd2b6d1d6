"""``grunet run``: image files → labels, per-cell tables and counts, no workflow engine needed."""

from __future__ import annotations

import argparse

from grunet.cli.predict import add_augment_option, add_diameter_options


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "run",
        help="segment, measure and count cells in image files (all stages)",
        description="Writes OUTDIR/<stem>.ome.zarr (with labels/cells), "
        "OUTDIR/cells/<stem>.parquet + .csv and OUTDIR/counts.csv. Each scene k of a "
        "multi-scene file (multi-series TIFF, CZI/ND2/LIF scenes) is its own sample <stem>_s<k>.",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="TIFF / OME-TIFF / zarr / CZI / ND2 / LIF files"
    )
    parser.add_argument("-o", "--outdir", required=True, help="output folder")
    parser.add_argument("--model", help="checkpoint (default: the small model shipped with grunet)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--axes", help="axes of inputs without metadata, e.g. TYX or ZYX")
    parser.add_argument("--scene", help="only this scene (index or name) of each input")
    parser.add_argument(
        "--channels", help="comma-separated channel names or indices the model reads (default: all)"
    )
    parser.add_argument("--tile", type=int, help="inference tile size in px")
    parser.add_argument("--batch-size", type=int, help="tiles per forward pass")
    add_diameter_options(parser)
    add_augment_option(parser)
    add_3d_options(parser)
    parser.add_argument(
        "--keep-probabilities", action="store_true", help="keep OUTDIR/<stem>.probs.zarr"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.set_defaults(func=run)
    return parser


def add_3d_options(parser: argparse.ArgumentParser) -> None:
    """``--mode`` / ``--anisotropy``: how Z-stacks are segmented."""
    parser.add_argument(
        "--mode",
        choices=["auto", "3d", "2d"],
        default="auto",
        help="Z-stacks: auto/3d = cells in 3D from XY, XZ and YZ predictions; 2d = every plane "
        "on its own (default auto)",
    )
    parser.add_argument(
        "--anisotropy",
        type=float,
        metavar="RATIO",
        help="z step / xy pixel size of Z-stacks (default: from the metadata, else 1)",
    )


def run(args: argparse.Namespace) -> int:
    from grunet.pipeline import run_pipeline

    counts = run_pipeline(
        args.inputs,
        args.outdir,
        model=args.model,
        device=args.device,
        axes=args.axes,
        scene=args.scene,
        channels=args.channels.split(",") if args.channels else None,
        tile=args.tile,
        batch_size=args.batch_size,
        diameter=args.diameter,
        diameter_um=args.diameter_um,
        augment=args.augment,
        mode=args.mode,
        anisotropy=args.anisotropy,
        keep_probabilities=args.keep_probabilities,
        overwrite=args.overwrite,
    )
    print(counts)
    return 0
