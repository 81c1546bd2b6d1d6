"""``grunet predict``: class probabilities of an OME-Zarr store, tile by tile."""

from __future__ import annotations

import argparse

COMPILE_CHOICES = {"auto": "auto", "yes": True, "true": True, "no": False, "false": False}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="class probabilities (float16 zarr) of a canonical OME-Zarr image store",
        description=(
            "Run GRUU-Net over every (t, z) plane of STORE.ome.zarr, tile by tile with a halo and "
            "smooth blending, and write OUT.probs.zarr (array 'probs', T,3,Z,Y,X float16). "
            "A semantic model (N classes) also writes STORE/labels/classes (class map with "
            "colours and names) and a class-area table (--areas)."
        ),
    )
    parser.add_argument("store", metavar="STORE.ome.zarr", help="image store (grunet convert)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.probs.zarr")
    parser.add_argument("--model", metavar="CKPT", help="checkpoint (default: the shipped model)")
    parser.add_argument("--tile", type=int, help="window core, px (default 1024)")
    parser.add_argument(
        "--halo", type=int, help="context per side, px (default 32; semantic models 256)"
    )
    parser.add_argument("--batch-size", type=int, help="tiles per forward (1 on CPU, 4 on GPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    parser.add_argument("--threads", type=int, help="CPU threads for the network")
    parser.add_argument(
        "--compile",
        type=str.lower,
        choices=sorted(COMPILE_CHOICES),
        default="auto",
        metavar="{auto,yes,no}",
        help="torch.compile the network: auto = only large jobs where it pays (default)",
    )
    parser.add_argument(
        "--channels", help="comma-separated channel names or indices to use (default: all)"
    )
    add_diameter_options(parser)
    add_augment_option(parser)
    from grunet.cli.run import add_3d_options

    add_3d_options(parser)
    parser.add_argument(
        "--areas",
        metavar="TABLE.parquet",
        help="semantic models: class-area table (default: OUT's folder/classes/<sample>.parquet)",
    )
    parser.add_argument(
        "--meta",
        nargs="*",
        metavar="KEY=VALUE",
        help="semantic models: constant columns of the class-area table, e.g. well=A01",
    )
    parser.add_argument("--scheduler", metavar="ADDRESS", help="dask-distributed scheduler")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.set_defaults(func=run)
    return parser


def add_diameter_options(parser: argparse.ArgumentParser) -> None:
    """``--diameter`` / ``--diameter-um``: the object scale, shared by predict and run."""
    parser.add_argument(
        "--diameter",
        type=float,
        metavar="PX",
        help="typical nucleus diameter in px; the image is resized to the model's (default: "
        "estimated per image)",
    )
    parser.add_argument(
        "--diameter-um",
        type=float,
        metavar="UM",
        help="typical nucleus diameter in micrometres (needs the image's pixel size)",
    )


def add_augment_option(parser: argparse.ArgumentParser) -> None:
    """``--augment``: test-time augmentation, shared by predict and run."""
    parser.add_argument(
        "--augment",
        action="store_true",
        help="average the predictions of each image and its mirror images: up to 0.01 more "
        "F1 on the val split for 4x the prediction time (default off)",
    )


def run(args: argparse.Namespace) -> int:
    from grunet.io import open_store
    from grunet.pipeline import use_3d
    from grunet.predict import Predictor, predict_store
    from grunet.semantic_evaluate import checkpoint_task
    from grunet.task import SEMANTIC

    task, checkpoint = checkpoint_task(args.model)
    if task == SEMANTIC:
        from grunet.pipeline import refuse_object_scale

        compile = COMPILE_CHOICES[args.compile]
        predictor = Predictor.from_checkpoint(
            checkpoint, args.device, compile=compile, augment=args.augment
        )
        refuse_object_scale(predictor, args.diameter, args.diameter_um)
        return run_semantic(args, predictor)
    if use_3d(args.mode, open_store(args.store).shape[2]):
        from grunet.predict3d import predict_store_3d

        predict_store_3d(
            args.store,
            args.output,
            model=args.model,
            anisotropy=args.anisotropy,
            batch_size=args.batch_size,
            device=args.device,
            threads=args.threads,
            channels=args.channels.split(",") if args.channels else None,
            diameter=args.diameter,
            diameter_um=args.diameter_um,
            augment=args.augment,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        return 0
    predict_store(
        args.store,
        args.output,
        model=args.model,
        tile=args.tile,
        halo=args.halo,
        batch_size=args.batch_size,
        device=args.device,
        threads=args.threads,
        compile=COMPILE_CHOICES[args.compile],
        scheduler=args.scheduler,
        channels=args.channels.split(",") if args.channels else None,
        diameter=args.diameter,
        diameter_um=args.diameter_um,
        augment=args.augment,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    return 0


def run_semantic(args: argparse.Namespace, predictor) -> int:
    """Probabilities, class map (STORE/labels/classes) and class-area table of a store."""
    from pathlib import Path

    from grunet.cli.measure import parse_meta
    from grunet.measure import sample_name
    from grunet.semantic_predict import predict_semantic_store

    sample = sample_name(args.store)
    areas = args.areas or Path(args.output).parent / "classes" / f"{sample}.parquet"
    _, table = predict_semantic_store(
        args.store,
        args.output,
        areas,
        model=predictor,
        sample=sample,
        metadata=parse_meta(args.meta),
        overwrite=args.overwrite,
        progress=not args.no_progress,
        tile=args.tile,
        halo=args.halo,
        batch_size=args.batch_size,
        threads=args.threads,
        scheduler=args.scheduler,
        channels=args.channels.split(",") if args.channels else None,
    )
    print(table)
    return 0
