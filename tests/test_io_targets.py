"""Training targets computed chunk by chunk equal the whole-image ones."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from grunet.preprocess import contact_mask, targets_from_labels, targets_from_labels_dask


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


def test_contact_mask_marks_where_two_cells_are_close_and_nowhere_else():
    labels = np.zeros((30, 40), np.int32)
    labels[5:15, 2:12] = 1
    labels[5:15, 14:24] = 2  # 2 px gap to cell 1: rims 3 px apart
    labels[20:28, 30:38] = 3  # alone
    contact = contact_mask(labels, radius=3)
    # the gap and each cell's facing rim are marked; a lone cell and far pixels are not
    assert contact[5:15, 12:14].all()
    assert contact[5:15, 11].all() and contact[5:15, 14].all()
    assert not contact[20:28, 30:38].any()
    assert not contact[:, :8].any() and not contact[:, 28:].any()


def test_contact_mask_finds_touching_nuclei_in_real_labels(nuclei_3d):
    labels = nuclei_3d[1][34]  # a plane where nuclei touch
    contact = contact_mask(labels, radius=1)
    # with radius 1, a marked pixel has two different cells in its 3x3 window
    ys, xs = np.nonzero(contact)
    assert ys.size > 0
    padded = np.pad(labels, 1)
    for y, x in zip(ys, xs):
        window = padded[y : y + 3, x : x + 3]
        assert np.unique(window[window > 0]).size >= 2
