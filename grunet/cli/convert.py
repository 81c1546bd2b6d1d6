"""``grunet convert``: images (TIFF / OME-TIFF / zarr / CZI / ND2 / LIF ...) → OME-Zarr stores."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert images to canonical OME-Zarr stores",
        description=(
            "Convert images to OUTDIR/<name>.ome.zarr (axes t,c,z,y,x, chunked, with per-channel "
            "normalisation ranges). Inputs: TIFF, OME-TIFF, ImageJ hyperstacks, zarr, OME-Zarr, "
            ".npy, demo:<name>; CZI, ND2, LIF, DV and more with grunet[formats]. A plain "
            "multi-page TIFF is read as a Z-stack unless --axes says otherwise. Each scene k of a "
            "multi-scene file becomes OUTDIR/<stem>_s<k>.ome.zarr."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or zarr stores")
    parser.add_argument("-o", "--outdir", required=True, help="folder for the .ome.zarr stores")
    parser.add_argument("--name", help="store name (one input only); default: the input's stem")
    parser.add_argument("--axes", help="axes of the inputs as letters of TCZYX, e.g. TYX or CZYX")
    parser.add_argument(
        "--scene", help="convert only this scene (index or name) of each input (default: all)"
    )
    parser.add_argument(
        "--channel-names", metavar="A,B", help="comma-separated channel names, e.g. DAPI,GFP"
    )
    parser.add_argument(
        "--pixel-size", metavar="Z,Y,X", help="pixel size in micrometres (Z,Y,X or Y,X)"
    )
    parser.add_argument(
        "--pyramid-levels",
        type=int,
        default=None,
        metavar="N",
        help="extra 2x-downsampled levels for viewers (default: down to <= 1024 px; 0: none)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing stores")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from grunet.io.convert import convert, parse_pixel_size

    names = None
    if args.channel_names:
        names = [n.strip() for n in args.channel_names.split(",")]
    outputs = convert(
        args.inputs,
        args.outdir,
        name=args.name,
        axes=args.axes,
        channel_names=names,
        pixel_size=parse_pixel_size(args.pixel_size),
        overwrite=args.overwrite,
        pyramid=args.pyramid_levels,
        progress=True,
        scene=args.scene,
    )
    for out in outputs:
        print(out)
    return 0
