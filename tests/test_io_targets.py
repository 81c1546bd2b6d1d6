"""Training targets computed chunk by chunk equal the whole-image ones."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from grunet.preprocess import targets_from_labels, targets_from_labels_dask


@pytest.mark.parametrize("chunk", [17, 48])
@pytest.mark.parametrize("width", [1, 3])
def test_chunked_targets_equal_whole_image_targets_on_real_labels(nuclei_3d, chunk, width):
    labels = nuclei_3d[1][25:29, 40:150, 60:180]  # real touching nuclei, (4, 110, 120)
    lazy = da.from_array(labels, chunks=(2, chunk, chunk))
    np.testing.assert_array_equal(
        targets_from_labels_dask(lazy, width).compute(), targets_from_labels(labels, width)
    )


def test_small_cells_across_chunk_borders_keep_their_interior():
    labels = np.zeros((2, 40, 40), np.uint32)
    labels[0, 14:18, 10:30] = 1  # 4 px thick: no interior under a 2 px boundary
    labels[0, 16:17, 5:8] = 2  # a 1 px line: no core at all
    labels[1, 15:17, 15:17] = 3  # 2 x 2 on a chunk corner
    labels[1, 20:40, 0:40] = 4  # a big cell touching the image border
    lazy = da.from_array(labels, chunks=(1, 16, 16))
    np.testing.assert_array_equal(
        targets_from_labels_dask(lazy).compute(), targets_from_labels(labels)
    )
