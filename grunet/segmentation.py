"""Class probabilities → instance labels, chunk by chunk, identical to segmenting at once.

Pipeline (each step a function of local data, so chunked and whole-image results are equal):

1. **Masks** (per pixel): foreground = ``1 - P(background) > foreground_threshold``;
   seeds = foreground ``& P(interior) > seed_threshold``.
2. **Seeds** are connected components of the seed mask (4-connected in 2D, 6-connected in 3D),
   labelled per block and merged across block faces (union-find over the pairs of ids that touch
   at a face). Components smaller than ``min_seed_size`` are dropped. Global ids are consecutive,
   assigned block by block; each worker receives only the few ids of *its* face components, never
   the whole relabel table.
3. **Growth**: ``grow_radius`` synchronous steps; an unlabelled foreground pixel joins the
   labelled neighbour of highest P(interior) (ties: first in a fixed neighbour order). A pixel's
   label depends only on data within ``grow_radius`` px, so blocks grown with a larger halo are
   exact. A distance-limited seeded watershed: cells split along the interior-probability valley.
4. **Holes**: background regions of at most ``max_hole_size`` px enclosed by a single cell (per
   z-plane, 4-connected) join that cell. Small holes are local too, so the halo covers them.
5. **Minimum size**: cells under ``min_size`` px are removed; sizes of cells that touch block faces
   are summed over blocks (cells are connected, so any other cell lies inside one block).

2D mode segments every (t, z) plane on its own; 3D mode (``three_d=True``, default when Z > 1)
labels seeds and grows them across z within a t (blocks span all of Z, YX is chunked). Ids are
unique across the whole stack (every t and z) and stored as uint32; a stack that would need more
ids than uint32 holds is refused rather than wrapped around.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from grunet.atomic import check_output_free
from grunet.errors import InputError

UINT32_MAX = np.iinfo(np.uint32).max
MAX_BLOCK_VOXELS = 2**24  # default 3D blocks (all of Z) are cut in YX to about this many voxels


@dataclass(frozen=True)
class SegmentOptions:
    """How probabilities become instances (all sizes in pixels/voxels)."""

    seed_threshold: float = 0.5  # P(interior) above which a foreground pixel seeds a cell
    foreground_threshold: float = 0.5  # 1 - P(background) above which a pixel may join a cell
    min_seed_size: int = 4  # seeds (connected interior regions) smaller than this are noise
    grow_radius: int = 10  # how far (px, 4-/6-connected steps) a cell grows from its seed
    max_hole_size: int = 64  # enclosed background regions up to this many px are filled (0: off)
    min_size: int = 0  # cells with fewer px (after growth and hole filling) are removed

    def __post_init__(self):
        for key in ("min_seed_size", "grow_radius", "max_hole_size", "min_size"):
            value = getattr(self, key)
            if value < 0 or value != int(value):
                raise ValueError(f"SegmentOptions.{key} must be a whole number >= 0, got {value}")
            object.__setattr__(self, key, int(value))  # e.g. 4.0 from checkpoint metadata
        for key in ("seed_threshold", "foreground_threshold"):
            object.__setattr__(self, key, float(getattr(self, key)))

    @property
    def halo(self) -> int:
        """YX overlap that makes per-block growth + hole filling exact."""
        return self.grow_radius + self.max_hole_size + 3


# --------------------------------------------------------------------------- per-block kernels


def _seed_mask(p: np.ndarray, opts: SegmentOptions) -> np.ndarray:
    """Seed pixels of a (3, Z, Y, X) probability block (pointwise): foreground & interior."""
    p1 = np.nan_to_num(np.asarray(p[1], dtype=np.float32), nan=0.0)
    return _foreground(p[0], opts.foreground_threshold) & (p1 > np.float32(opts.seed_threshold))


def _priority(p1: np.ndarray) -> np.ndarray:
    return np.nan_to_num(p1, nan=0.0) if p1.dtype.kind == "f" else p1


def _foreground(p0: np.ndarray, threshold: float) -> np.ndarray:
    return (np.float32(1.0) - np.asarray(p0, np.float32)) > np.float32(threshold)


_STRUCTURE = ndi.generate_binary_structure(3, 1)  # 6-connected; a 1-plane block is 4-connected


def _local_seeds(p: np.ndarray, opts: SegmentOptions) -> tuple[np.ndarray, int]:
    labels, n = ndi.label(_seed_mask(p, opts), structure=_STRUCTURE)
    return labels, int(n)


def _faces(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The four YX faces of a (Z, Y, X) block (z faces never touch another block)."""
    return {
        "top": labels[:, 0, :],
        "bottom": labels[:, -1, :],
        "left": labels[:, :, 0],
        "right": labels[:, :, -1],
    }


def _face_ids(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(np.concatenate([f.ravel() for f in _faces(labels).values()]))
    return ids[ids > 0]


def _analyse_seeds(p: np.ndarray, opts: SegmentOptions) -> dict[str, Any]:
    """Per-block seed summary: counts, face components and the faces themselves."""
    labels, n = _local_seeds(p, opts)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    face_ids = _face_ids(labels)
    is_face = np.zeros(n + 1, bool)
    is_face[face_ids] = True
    small = np.flatnonzero((sizes < opts.min_seed_size) & ~is_face)
    small = small[small > 0]
    return {
        "n": n,
        "face_ids": face_ids,
        "face_sizes": sizes[face_ids].astype(np.int64),
        "small_below": np.searchsorted(small, face_ids).astype(np.int64),
        "n_small": int(small.size),
        **{key: face.copy() for key, face in _faces(labels).items()},
    }


def _summary(analysis: dict[str, Any]) -> dict[str, Any]:
    return {k: analysis[k] for k in ("n", "face_ids", "face_sizes", "small_below", "n_small")}


def _face_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unique (id_a, id_b) pairs of labels facing each other across a block face."""
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), np.int64)
    return np.unique(np.stack([a[both], b[both]], axis=1).astype(np.int64), axis=0)


def _resolve_seeds(
    p: np.ndarray,
    opts: SegmentOptions,
    face_local: np.ndarray,
    face_final: np.ndarray,
    face_owned: np.ndarray,
    start: int,
) -> np.ndarray:
    """Global seed ids of one block: its own kept seeds get start+1.., face seeds use the table.

    ``face_owned`` marks the face pieces that number a seed here (its root piece); other pieces
    of the same seed (met again along this block's faces, joined elsewhere) use no id of this
    block, even though their final id lies in its range.
    """
    labels, n = _local_seeds(p, opts)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    is_face = np.zeros(n + 1, bool)
    is_face[face_local] = True
    own = (sizes >= opts.min_seed_size) & ~is_face
    own[0] = False
    own[face_local[face_owned]] = True
    lut = np.zeros(n + 1, np.uint32)  # ids fit: the driver checked the total against uint32
    lut[own] = start + np.cumsum(own)[own]
    lut[face_local] = face_final
    return lut[labels][None]  # (1, Z, Y, X)


def _grow(seeds: np.ndarray, priority: np.ndarray, foreground: np.ndarray, radius: int):
    """Grow labelled seeds into the foreground for ``radius`` synchronous steps (new array)."""
    labels = np.pad(seeds, 1)
    prio = np.pad(priority, 1)
    shape = labels.shape
    strides = np.cumprod((1,) + shape[:0:-1])[::-1]  # C-order element strides of (Z, Y, X)
    offsets = [-strides[1], -strides[2], strides[2], strides[1], -strides[0], strides[0]]
    flat, flat_prio = labels.ravel(), prio.ravel()
    remaining = np.flatnonzero(np.pad(foreground, 1).ravel() & (flat == 0))
    for _ in range(radius):
        if remaining.size == 0:
            break
        best = np.zeros(remaining.size, flat.dtype)
        best_p = np.full(remaining.size, -np.inf, np.float64)
        for off in offsets:  # fixed order: ties go to the first neighbour in it
            neighbour = remaining + off
            lab, pr = flat[neighbour], flat_prio[neighbour]
            take = (lab > 0) & (pr > best_p)
            best[take], best_p[take] = lab[take], pr[take]
        grown = best > 0
        flat[remaining[grown]] = best[grown]  # synchronous: all reads happened before this write
        remaining = remaining[~grown]
    return labels[1:-1, 1:-1, 1:-1]


def _fill_holes(labels: np.ndarray, max_hole_size: int) -> np.ndarray:
    """Fill background regions (≤ max_hole_size px, per plane) enclosed by one label."""
    if max_hole_size <= 0:
        return labels
    out = labels.copy()
    for z, plane in enumerate(labels):
        holes, n = ndi.label(plane == 0)
        if n == 0:
            continue
        sizes = np.bincount(holes.ravel(), minlength=n + 1)
        candidate = sizes <= max_hole_size
        candidate[0] = False
        candidate[_face_ids(holes[None])] = False  # touching the (extended) block border
        if not candidate.any():
            continue
        low = np.full(n + 1, np.iinfo(np.int64).max, np.int64)
        high = np.zeros(n + 1, np.int64)
        for axis in (0, 1):  # the labels 4-adjacent to each hole, both directions per axis
            lo, hi = [slice(None)] * 2, [slice(None)] * 2
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            for here, there in ((lo, hi), (hi, lo)):
                h, lab = holes[tuple(here)], plane[tuple(there)].astype(np.int64)
                sel = candidate[h] & (lab > 0)
                np.minimum.at(low, h[sel], lab[sel])
                np.maximum.at(high, h[sel], lab[sel])
        fill = candidate & (low == high) & (high > 0)
        where = fill[holes]
        out[z][where] = high[holes[where]].astype(out.dtype)
    return out


def _grow_fill(seeds: np.ndarray, priority: np.ndarray, foreground: np.ndarray, *, opts):
    """Growth + hole filling of a (T=1, Z, Y, X) block with halo (dask map_overlap kernel)."""
    out = np.empty_like(seeds)
    for t in range(seeds.shape[0]):
        grown = _grow(seeds[t], priority[t], foreground[t], opts.grow_radius)
        out[t] = _fill_holes(grown, opts.max_hole_size)
    return out


def _analyse_sizes(labels: np.ndarray, min_size: int) -> dict[str, np.ndarray]:
    """Pixel counts of the face-touching ids, and the inner ids under ``min_size`` px."""
    ids, counts = np.unique(labels, return_counts=True)
    at_face = np.isin(ids, _face_ids(labels[0]))
    small = ~at_face & (counts < min_size) & (ids > 0)
    return {"ids": ids[at_face], "counts": counts[at_face].astype(np.int64), "small": ids[small]}


def _remove_small(labels: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """Zero the ``dropped`` ids (sorted) and close the gaps: ids stay consecutive."""
    ids, inverse = np.unique(labels, return_inverse=True)
    gone = np.isin(ids, dropped)
    new = ids - np.searchsorted(dropped, ids).astype(ids.dtype)
    new[gone | (ids == 0)] = 0
    return new[inverse.reshape(labels.shape)].astype(labels.dtype)


# --------------------------------------------------------------------------- whole-stack driver


def _as_dask(probs, block: int | tuple[int, int] | None, three_d: bool) -> da.Array:
    """(T, 3, Z, Y, X) dask array rechunked to blocks (1, 3, 1|Z, by, bx)."""
    arr = probs if isinstance(probs, da.Array) else da.from_array(np.asarray(probs), chunks=-1)
    T, C, Z, Y, X = arr.shape
    if block is None and three_d and Z * max(arr.chunks[3]) * max(arr.chunks[4]) > MAX_BLOCK_VOXELS:
        side = max(int(np.sqrt(MAX_BLOCK_VOXELS / Z)), 128)  # whole-Z blocks stay ~64 MiB/array
        cy, cx = side, side
    elif block is None:
        cy, cx = arr.chunks[3], arr.chunks[4]
    else:
        by, bx = (block, block) if np.isscalar(block) else block
        cy, cx = int(by), int(bx)
    return arr.rechunk((1, 3, Z if three_d else 1, cy, cx))


def _check_probs(probs) -> None:
    shape = tuple(probs.shape)
    if len(shape) != 5 or shape[1] != 3:
        raise ValueError(f"probabilities must be (T, 3, Z, Y, X), got shape {shape}")


def segment_probabilities(
    probs,
    *,
    options: SegmentOptions | None = None,
    block: int | tuple[int, int] | None = None,
    three_d: bool | None = None,
    first_id: int = 0,
) -> da.Array:
    """Instance labels of a probability stack, computed block by block.

    Args:
        probs: (T, 3, Z, Y, X) background/interior/boundary probabilities (numpy or dask).
        options: thresholds and sizes (:class:`SegmentOptions`).
        block: YX block size (int or (by, bx)); None keeps the dask chunks (numpy: one block),
            except that 3D blocks (all of Z) are cut to about ``MAX_BLOCK_VOXELS`` voxels.
        three_d: seeds and growth across z (default: Z > 1); else every (t, z) plane alone.
        first_id: ids start at ``first_id + 1`` (to continue numbering of another stack).

    Returns:
        Lazy uint32 dask array (T, 1, Z, Y, X). Seeds are resolved eagerly (one cheap pass over
        the probabilities); growth runs when the result is computed or stored. The labels equal
        those of the same call with any other ``block`` up to a relabelling.

    Example:
        >>> labels = segment_probabilities(probs, block=512).compute()  # doctest: +SKIP
    """
    _check_probs(probs)
    opts = options or SegmentOptions()
    Z = probs.shape[2]
    three_d = Z > 1 if three_d is None else bool(three_d)
    arr = _as_dask(probs, block, three_d)
    seeds = _global_seeds(arr, opts, first_id)  # (T, Z, Y, X)
    # per-block inputs of growth kept small (one row of blocks is alive at a time): P(interior)
    # in its stored dtype (float16 compares exactly after widening), foreground as bool
    priority = arr[:, 1].map_blocks(_priority, dtype=arr.dtype)
    foreground = arr[:, 0].map_blocks(_foreground, opts.foreground_threshold, dtype=bool)
    depth = {0: 0, 1: 0, 2: opts.halo, 3: opts.halo}
    inputs = [seeds, priority, foreground]
    for axis in (2, 3):  # an axis no longer than the halo is grown in one piece
        if seeds.shape[axis] <= opts.halo:
            depth[axis] = 0
            inputs = [a.rechunk({axis: -1}) for a in inputs]
    grown = da.map_overlap(
        _grow_fill,
        *inputs,
        depth=depth,
        boundary="none",
        dtype=np.uint32,
        opts=opts,
        meta=np.empty((0, 0, 0, 0), np.uint32),
    )
    grown = grown.rechunk(seeds.chunks)
    if opts.min_size > 0:
        grown = _drop_small_cells(grown, opts.min_size)
    return grown[:, None]


def _block_grid(arr: da.Array) -> list[tuple[int, ...]]:
    return list(product(*(range(n) for n in arr.numblocks)))


def _assemble(tasks: dict[tuple, Any], chunks, dtype) -> da.Array:
    """Dask array from one delayed numpy block per block index (grid of ``chunks``)."""
    grid = _nest(tasks, chunks, dtype, ())
    return da.block(grid)


def _nest(tasks, chunks, dtype, prefix):
    axis = len(prefix)
    if axis == len(chunks):
        shape = tuple(chunks[d][i] for d, i in enumerate(prefix))
        return da.from_delayed(tasks[prefix], shape=shape, dtype=dtype)
    return [_nest(tasks, chunks, dtype, prefix + (i,)) for i in range(len(chunks[axis]))]


def _global_seeds(arr: da.Array, opts: SegmentOptions, first_id: int) -> da.Array:
    """Seed labels (T, Z, Y, X) uint32 with ids unique across the stack, merged across faces."""
    grid = _block_grid(arr)  # (t, 0, zb, yb, xb)
    blocks = {b: arr.blocks[b][0] for b in grid}  # (3, Z, Y, X) each
    analyse = {b: dask.delayed(_analyse_seeds)(blocks[b], opts) for b in grid}
    pairs = {}
    for b in grid:
        t, c, z, y, x = b
        if (t, c, z, y + 1, x) in analyse:
            below = analyse[(t, c, z, y + 1, x)]
            pairs[(b, (t, c, z, y + 1, x))] = dask.delayed(_face_pairs)(
                analyse[b]["bottom"], below["top"]
            )
        if (t, c, z, y, x + 1) in analyse:
            right = analyse[(t, c, z, y, x + 1)]
            pairs[(b, (t, c, z, y, x + 1))] = dask.delayed(_face_pairs)(
                analyse[b]["right"], right["left"]
            )
    summaries = {b: dask.delayed(_summary)(a) for b, a in analyse.items()}
    summaries, pairs = dask.compute(summaries, pairs)
    tables, starts = _seed_tables(grid, summaries, pairs, opts, first_id)
    chunks = (arr.chunks[0], arr.chunks[2], arr.chunks[3], arr.chunks[4])
    tasks = {
        (b[0],) + b[2:]: dask.delayed(_resolve_seeds)(blocks[b], opts, *tables[b], starts[b])
        for b in grid
    }
    return _assemble(tasks, chunks, np.uint32)


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.int64) for a in arrays] + [np.zeros(0, np.int64)])


def _seed_tables(grid, summaries, pairs, opts, first_id):
    """Union-find over face pairs → per block (face_local, face_final) tables and id starts."""
    index = {b: k for k, b in enumerate(grid)}
    n = np.array([summaries[b]["n"] for b in grid], np.int64)
    offset = np.concatenate([[0], np.cumsum(n)[:-1]])  # provisional id = offset + local id
    face_gid = _cat([offset[index[b]] + summaries[b]["face_ids"] for b in grid])
    face_size = _cat([summaries[b]["face_sizes"] for b in grid])
    face_block = _cat([np.full(summaries[b]["face_ids"].size, index[b]) for b in grid])
    m = face_gid.size  # face_gid is sorted: blocks in order, ids sorted within a block
    edges = [
        np.stack([offset[index[a]] + p[:, 0], offset[index[b]] + p[:, 1]], axis=1)
        for (a, b), p in pairs.items()
        if p.size
    ]
    edges = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    u, v = np.searchsorted(face_gid, edges[:, 0]), np.searchsorted(face_gid, edges[:, 1])
    graph = coo_matrix((np.ones(u.size, np.int8), (u, v)), shape=(m, m))
    _, component = connected_components(graph, directed=False)
    root = np.full(component.max(initial=-1) + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(root, component, face_gid)
    size = np.bincount(component, weights=face_size, minlength=root.size)
    kept_comp = size >= opts.min_seed_size
    owned = (face_gid == root[component]) & kept_comp[component]
    # ids: block by block, kept owned seeds in local-id order
    dropped_face = np.bincount(face_block[~owned], minlength=len(grid))
    n_small = np.array([summaries[b]["n_small"] for b in grid], np.int64)
    n_keep = n - n_small - dropped_face
    starts_arr = first_id + np.concatenate([[0], np.cumsum(n_keep)[:-1]])
    total = first_id + int(n_keep.sum())
    if total > UINT32_MAX:
        raise InputError(
            None,
            f"segmentation needs {total} label ids, more than uint32 holds ({UINT32_MAX}); "
            "raise --min-size/seed thresholds or split the stack",
        )
    final = np.zeros(m, np.int64)
    pos = 0
    for b in grid:
        k = index[b]
        ids = summaries[b]["face_ids"]
        sl = slice(pos, pos + ids.size)
        dropped_before = np.cumsum(~owned[sl]) - (~owned[sl])  # dropped face ids below each id
        rank = ids - summaries[b]["small_below"] - dropped_before
        final[sl] = np.where(owned[sl], starts_arr[k] + rank, 0)
        pos += ids.size
    root_final = np.zeros(root.size, np.int64)
    root_final[component[owned]] = final[owned]
    final = np.where(kept_comp[component], root_final[component], 0)
    tables, starts, pos = {}, {}, 0
    for b in grid:
        ids = summaries[b]["face_ids"]
        sl = slice(pos, pos + ids.size)
        tables[b] = (ids.astype(np.int64), final[sl].astype(np.uint64), owned[sl].copy())
        starts[b] = int(starts_arr[index[b]])
        pos += ids.size
    return tables, starts


def _drop_small_cells(labels: da.Array, min_size: int) -> da.Array:
    """Remove cells under ``min_size`` px (face cells' sizes summed across blocks), renumbered."""
    grid = _block_grid(labels)
    blocks = {b: labels.blocks[b] for b in grid}
    parts = dask.compute({b: dask.delayed(_analyse_sizes)(blocks[b], min_size) for b in grid})[0]
    ids = np.concatenate([p["ids"] for p in parts.values()] + [np.zeros(0, np.uint32)])
    counts = np.concatenate([p["counts"] for p in parts.values()] + [np.zeros(0, np.int64)])
    uniq, inverse = np.unique(ids, return_inverse=True)
    total = np.bincount(inverse, weights=counts, minlength=uniq.size)
    inner = [p["small"] for p in parts.values()]
    dropped = np.unique(np.concatenate([uniq[(total < min_size) & (uniq > 0)], *inner]))
    dropped = dropped.astype(np.uint32)
    tasks = {b: dask.delayed(_remove_small)(blocks[b], dropped) for b in grid}
    return _assemble(tasks, labels.chunks, np.uint32)


# --------------------------------------------------------------------------- public helpers


def instances_from_probabilities(
    probs: np.ndarray,
    *,
    seed_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    min_seed_size: int = 4,
    options: SegmentOptions | None = None,
    block: int | None = None,
) -> np.ndarray:
    """Instance labels (uint32) of one (3, Y, X) or (3, Z, Y, X) probability map.

    Classes are background/interior/boundary. A 4D input is segmented in 3D (seeds and growth
    across z). ``block`` segments in YX blocks of that size and gives the same labels (up to a
    relabelling). ``options`` overrides the three threshold arguments.

    Example:
        >>> labels = instances_from_probabilities(probs)  # (3, Y, X) -> (Y, X)  # doctest: +SKIP
    """
    probs = np.asarray(probs)
    if probs.ndim not in (3, 4) or probs.shape[0] != 3:
        raise ValueError(f"probabilities must be (3, Y, X) or (3, Z, Y, X), got {probs.shape}")
    if options is None:
        options = SegmentOptions(
            seed_threshold=seed_threshold,
            foreground_threshold=foreground_threshold,
            min_seed_size=min_seed_size,
        )
    stack = probs[None] if probs.ndim == 4 else probs[None, :, None]
    labels = segment_probabilities(stack, options=options, block=block, three_d=probs.ndim == 4)
    out = labels.compute(scheduler="threads")[0, 0]
    return out if probs.ndim == 4 else out[0]


def segment_plane(probs, *, chunk_size: int | None = None, **options) -> np.ndarray:
    """(3, Y, X) probabilities (numpy or dask) → (Y, X) uint32 instance labels.

    Args:
        probs: background/interior/boundary probabilities of one plane.
        chunk_size: segment in chunks of this many px per side; the labels are identical to
            whole-plane segmentation up to a renumbering (None: dask chunks / whole plane).
        **options: :class:`SegmentOptions` fields (e.g. thresholds stored with a checkpoint).

    Example:
        >>> labels = segment_plane(probs, chunk_size=512, seed_threshold=0.6)  # doctest: +SKIP
    """
    known = set(SegmentOptions.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown segmentation option(s) {unknown}; known: {sorted(known)}")
    if probs.ndim != 3 or probs.shape[0] != 3:
        raise ValueError(f"probabilities must be (3, Y, X), got shape {tuple(probs.shape)}")
    stack = probs[None, :, None]
    labels = segment_probabilities(stack, options=SegmentOptions(**options), block=chunk_size)
    return np.asarray(labels[0, 0, 0].compute())


def segment_store(
    probs_path: str | Path,
    image_store: str | Path,
    *,
    name: str = "cells",
    overwrite: bool = False,
    options: SegmentOptions | dict | None = None,
    three_d: bool | None = None,
    block: int | None = None,
    progress: bool = False,
) -> Path:
    """Segment a ``<sample>.probs.zarr`` into ``<image_store>/labels/<name>`` (atomic).

    Thresholds default to those stored with the model that predicted the probabilities
    (checkpoint metadata "segmentation", copied into the probs attrs); a dict of
    :class:`SegmentOptions` fields overrides some of them, a :class:`SegmentOptions` all.

    Args:
        probs_path: zarr group with array "probs" (T, 3, Z, Y, X) (from ``grunet predict``).
        image_store: the canonical ``<sample>.ome.zarr`` the probabilities were predicted from.
        name: labels name inside the store.
        overwrite: replace existing labels of that name.
        options: :class:`SegmentOptions`; three_d: see :func:`segment_probabilities`.
        block: YX block size (default: the probabilities' chunks).
        progress: show a progress bar while writing.

    Returns:
        Path of the written labels group.
    """
    from grunet import __version__
    from grunet import io as gio

    probs_path, image_store = Path(probs_path), Path(image_store)
    if not probs_path.exists():
        raise InputError(probs_path, "probabilities not found (run `grunet predict` first)")
    if not image_store.exists():
        raise InputError(image_store, "image store not found")
    probs, attrs = gio.read_array(probs_path, "probs")
    if probs.ndim != 5 or probs.shape[1] != 3:
        raise InputError(probs_path, f"expected probs of shape (T, 3, Z, Y, X), got {probs.shape}")
    check_output_free(image_store / "labels" / name, overwrite)
    image = gio.open_store(image_store)
    t, _, z, y, x = image.data.shape
    if (probs.shape[0], probs.shape[2], probs.shape[3], probs.shape[4]) != (t, z, y, x):
        raise InputError(
            probs_path, f"shape {probs.shape} does not match image {image.data.shape} (T,C,Z,Y,X)"
        )
    meta = attrs.get("grunet", attrs) if isinstance(attrs, dict) else {}
    if isinstance(options, SegmentOptions):
        opts = options
    else:
        opts = SegmentOptions(**{**(meta.get("segmentation") or {}), **(options or {})})
    three_d = probs.shape[2] > 1 if three_d is None else three_d
    labels = segment_probabilities(probs, options=opts, block=block, three_d=three_d)
    provenance = {
        "version": __version__,
        "stage": "segment",
        "source": str(probs_path),
        "image": str(image_store),
        "model_sha256": meta.get("model_sha256"),
        "object_scale": meta.get("object_scale"),
        "three_d": bool(three_d),
        "block": block,
        "options": asdict(opts),
    }
    return Path(
        gio.write_labels(
            image_store,
            labels,
            name=name,
            attrs=provenance,
            overwrite=overwrite,
            progress=progress,
        )
    )
