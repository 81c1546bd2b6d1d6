"""Class probabilities → instance labels, block by block, identical to segmenting at once.

Pipeline (each step a function of local data, so chunked and whole-image results are equal):

1. **Masks** (per pixel): foreground = ``1 - P(background) > foreground_threshold``;
   seeds = foreground ``& P(interior) > seed_threshold``.
2. **Seeds** are connected components of the seed mask (4-connected in 2D, 6-connected in 3D).
   Each block labels its own seeds once; a seed that touches a block face is a *face piece*.
   Face pieces that meet across a face are joined (union-find over a compact table of face
   pieces), and a joined seed is numbered by its first piece in block order (its *root*). Seeds
   (joined) smaller than ``min_seed_size`` are dropped. Ids are consecutive, block by block.
3. **Growth**: ``grow_radius`` synchronous steps; an unlabelled foreground pixel joins the
   labelled neighbour of highest P(interior) (ties: first in a fixed neighbour order). A pixel's
   label depends only on data within ``grow_radius`` px, so blocks grown with a larger halo are
   exact. A distance-limited seeded watershed: cells split along the interior-probability valley.
4. **Holes**: background regions of at most ``max_hole_size`` px enclosed by a single cell (per
   z-plane, 4-connected) join that cell. Small holes are local too, so the halo covers them.
5. **Minimum size**: cells under ``min_size`` px are removed and the ids closed up; sizes of
   cells that touch block faces are summed over blocks (any other cell lies inside one block).

Memory is bounded by a few blocks whatever the image size: pass 1 labels the seeds of each block
and keeps them (block-local ids) with the growth priorities in a scratch store (in memory for
in-memory inputs, else a temporary folder on disk); pass 2 grows each block from its own
scratch data plus a halo read from its neighbours' scratch data, mapping their block-local ids
through the face table. The driver holds only that table and one row of block faces.

2D mode segments every (t, z) plane on its own; 3D mode (``three_d=True``, default when Z > 1)
labels seeds and grows them across z within a t (blocks span all of Z, YX is chunked; stacks
too deep for that are cut in z slabs too, joined across slab faces like YX blocks, with a z
halo of the planes growth can reach). Ids are
unique across the whole stack (every t and z) and stored as uint32; a stack that would need more
ids than uint32 holds is refused rather than wrapped around.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from grunet.atomic import check_output_free, remove_abandoned_temporaries, temporary_sibling
from grunet.errors import InputError
from grunet.npyfile import open_npy
from grunet.parallel import default_scheduler, in_order, synchronous_scheduler, threaded_scheduler

UINT32_MAX = np.iinfo(np.uint32).max
MAX_BLOCK_VOXELS = 2**24  # default 3D blocks (all of Z) are cut in YX to about this many voxels
MIN_BLOCK_SIDE = 128  # ... down to this YX side; deeper stacks (Z > 1024) are cut in z slabs too


@dataclass(frozen=True)
class SegmentOptions:
    """How probabilities become instances (all sizes in pixels/voxels)."""

    seed_threshold: float = 0.5  # P(interior) above which a foreground pixel seeds a cell
    foreground_threshold: float = 0.5  # 1 - P(background) above which a pixel may join a cell
    min_seed_size: int = 4  # seeds (connected interior regions) smaller than this are noise
    grow_radius: int = 10  # how far (px, 4-/6-connected steps) a cell grows from its seed
    max_hole_size: int = 64  # enclosed background regions up to this many px are filled (0: off)
    min_size: int = 0  # cells with fewer px (after growth and hole filling) are removed
    anisotropy: float = 1.0  # 3D: z step / xy pixel size; growth steps in z this much longer

    def __post_init__(self):
        for key in ("min_seed_size", "grow_radius", "max_hole_size", "min_size"):
            value = getattr(self, key)
            if value < 0 or value != int(value):
                raise ValueError(f"SegmentOptions.{key} must be a whole number >= 0, got {value}")
            object.__setattr__(self, key, int(value))  # e.g. 4.0 from checkpoint metadata
        for key in ("seed_threshold", "foreground_threshold", "anisotropy"):
            object.__setattr__(self, key, float(getattr(self, key)))
        if not (np.isfinite(self.anisotropy) and self.anisotropy > 0):
            raise ValueError(f"SegmentOptions.anisotropy must be > 0, got {self.anisotropy}")

    @property
    def halo(self) -> int:
        """YX overlap that makes per-block growth + hole filling exact."""
        return self.grow_radius + self.max_hole_size + 3


# --------------------------------------------------------------------------- per-pixel masks


def _foreground(p0: np.ndarray, threshold: float) -> np.ndarray:
    return (np.float32(1.0) - np.asarray(p0, np.float32)) > np.float32(threshold)


def _masks(p: np.ndarray, opts: SegmentOptions) -> tuple[np.ndarray, np.ndarray]:
    """Seed mask and growth priority of a (3, Z, Y, X) probability block (pointwise).

    The priority is P(interior) (NaN and negatives as 0) on the foreground and -1 elsewhere, so
    one array carries both what growth compares and where it may go. It keeps a float16/32/64
    input's dtype (float16 compares exactly as it is); other dtypes become float32.
    """
    p1 = np.asarray(p[1])
    if p1.dtype.kind != "f":
        p1 = p1.astype(np.float32)
    wide = p1.astype(np.float32) if p1.dtype.itemsize < 4 else p1
    if np.isnan(wide).any() or (wide < 0).any():  # rare: repair, then back to the stored dtype
        wide = np.maximum(np.nan_to_num(wide, nan=0.0), 0)
        p1 = wide.astype(p1.dtype)
    foreground = _foreground(p[0], opts.foreground_threshold)
    seeds = foreground & (wide > np.float32(opts.seed_threshold))
    priority = np.where(foreground, p1, p1.dtype.type(-1))
    return seeds, priority


# --------------------------------------------------------------------------- growth, holes


def _grow(seeds: np.ndarray, priority: np.ndarray, radius: int, anisotropy: float = 1.0):
    """Grow labelled seeds (Z, Y, X) into the foreground (priority >= 0) for ``radius`` steps.

    Each step visits only the front: unlabelled foreground pixels next to a labelled one. A
    single plane is grown with its 4 YX neighbours only (no z look-ups). In 3D a z step counts
    ``anisotropy`` xy steps: with anisotropy a > 1, z moves happen on a fraction 1/a of the steps
    (a < 1: xy moves on a fraction a of ``radius / a`` steps), so growth reaches ``radius`` xy
    px and about ``radius / a`` planes, whatever the voxel shape.
    """
    dims = seeds.shape if seeds.shape[0] > 1 else seeds.shape[1:]
    labels = np.pad(seeds.reshape(dims), 1)
    prio = np.pad(priority.reshape(dims), 1, constant_values=-1)
    strides = np.cumprod((1,) + labels.shape[:0:-1])[::-1]  # C-order element strides
    offsets = [-strides[-2], -strides[-1], strides[-1], strides[-2]]
    rate_xy, rate_z, steps = 1.0, 1.0, radius
    if len(dims) == 3:
        offsets += [-strides[0], strides[0]]
        rate_xy, rate_z = min(1.0, anisotropy), min(1.0, 1.0 / anisotropy)
        steps = int(round(radius / rate_xy))
    flat, flat_prio = labels.ravel(), prio.ravel()
    free = (flat_prio >= 0) & (flat == 0)  # may still be grown into
    front = _next_front(np.flatnonzero(flat), offsets, free) if steps else None
    for step in range(steps):
        if front.size == 0:
            break
        moves = []
        if int((step + 1) * rate_xy + 1e-9) > int(step * rate_xy + 1e-9):
            moves += offsets[:4]
        if len(offsets) > 4 and int((step + 1) * rate_z + 1e-9) > int(step * rate_z + 1e-9):
            moves += offsets[4:]
        best = np.zeros(front.size, flat.dtype)
        best_p = np.full(front.size, -np.inf, flat_prio.dtype)
        for off in moves:  # fixed order: ties go to the first neighbour in it
            neighbour = front + off
            lab, pr = flat[neighbour], flat_prio[neighbour]
            take = (lab > 0) & (pr > best_p)
            best[take], best_p[take] = lab[take], pr[take]
        got = best > 0
        grown, waiting = front[got], front[~got]
        flat[grown] = best[got]  # synchronous: all reads happened before this write
        free[grown] = False
        if step + 1 < steps:
            front = _next_front(grown, offsets, free)
            if waiting.size:  # next to a cell along an axis that did not move this step
                front = np.union1d(front, waiting)
    inner = labels[(slice(1, -1),) * labels.ndim]
    return np.ascontiguousarray(inner).reshape(seeds.shape)


def _next_front(grown: np.ndarray, offsets: list[int], free: np.ndarray) -> np.ndarray:
    """Free pixels next to any of the ``grown`` (flat indices), each once, in index order."""
    mark = np.zeros(free.size, bool)
    for off in offsets:
        mark[grown + off] = True  # the padding keeps every neighbour index in range
    mark &= free
    return np.flatnonzero(mark)


def _fill_holes(labels: np.ndarray, max_hole_size: int) -> np.ndarray:
    """Fill background regions (≤ max_hole_size px, per plane) enclosed by one label (in place)."""
    if max_hole_size <= 0:
        return labels
    labels = np.ascontiguousarray(labels)
    for plane in labels:
        holes, n = ndi.label(plane == 0)
        if n == 0:
            continue
        sizes = np.bincount(holes.ravel(), minlength=n + 1)
        candidate = sizes <= max_hole_size
        candidate[0] = False
        border = np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])
        candidate[border] = False  # touching the (extended) block border: not known to be closed
        if not candidate.any():
            continue
        inside = np.flatnonzero(candidate[holes].ravel())  # never on the border: no wrap-around
        width = plane.shape[1]
        hole_of = holes.ravel()[inside]
        flat = plane.reshape(-1)  # a view: filled in place
        around = np.concatenate([flat[inside + off] for off in (-width, -1, 1, width)])
        which = np.tile(hole_of, 4)
        low = np.full(n + 1, UINT32_MAX + 1, np.int64)
        high = np.zeros(n + 1, np.int64)
        sel = around > 0
        np.minimum.at(low, which[sel], around[sel].astype(np.int64))
        np.maximum.at(high, which[sel], around[sel].astype(np.int64))
        fill = candidate & (low == high) & (high > 0)
        take = fill[hole_of]
        flat[inside[take]] = high[hole_of[take]].astype(plane.dtype)
    return labels


# --------------------------------------------------------------------------- block grid, scratch


@dataclass(frozen=True)
class _Grid:
    """Blocks (t, k, i, j) of a (T, Z, Y, X) stack: k is a plane (2D) or a z slab (3D)."""

    shape: tuple[int, int, int, int]
    three_d: bool
    ys: np.ndarray  # block boundaries along Y (len n_i + 1)
    xs: np.ndarray
    zs: np.ndarray  # along Z: every plane (2D), all of Z or slabs (3D)

    @property
    def keys(self) -> list[tuple[int, int, int, int]]:
        T = self.shape[0]
        nz, ny, nx = len(self.zs) - 1, len(self.ys) - 1, len(self.xs) - 1
        return [
            (t, k, i, j) for t in range(T) for k in range(nz) for i in range(ny) for j in range(nx)
        ]

    @property
    def z_faces(self) -> bool:
        """Whether seeds are joined across z slabs (3D cut in z)."""
        return self.three_d and len(self.zs) > 2

    def zslice(self, k: int) -> slice:
        return slice(int(self.zs[k]), int(self.zs[k + 1]))

    def region(self, key) -> tuple[slice, slice]:
        _, _, i, j = key
        return slice(self.ys[i], self.ys[i + 1]), slice(self.xs[j], self.xs[j + 1])

    def chunks(self) -> tuple[tuple[int, ...], ...]:
        T = self.shape[0]
        return ((1,) * T, tuple(np.diff(self.zs)), tuple(np.diff(self.ys)), tuple(np.diff(self.xs)))


def _boundaries(n: int, block: int | Iterable[int]) -> np.ndarray:
    """Block edges along an axis of length n: blocks of ``block`` px, or the given sizes."""
    if np.isscalar(block):
        sizes = [block] * (n // block) + ([n % block] if n % block else [])
    else:
        sizes = list(block)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _grid(probs, block, three_d: bool) -> _Grid:
    T, _, Z, Y, X = probs.shape
    bz = None
    if block is not None and not np.isscalar(block) and len(block) == 3:
        bz, block = int(block[0]), tuple(block[1:])
        if bz < 1:
            raise ValueError(f"block sizes must be positive, got {bz}")
    if block is not None:
        by, bx = (block, block) if np.isscalar(block) else block
        if int(by) < 1 or int(bx) < 1:
            raise ValueError(f"block sizes must be positive, got {block}")
        ys, xs = _boundaries(Y, int(by)), _boundaries(X, int(bx))
    elif isinstance(probs, da.Array):
        ys, xs = _boundaries(Y, probs.chunks[3]), _boundaries(X, probs.chunks[4])
    else:
        ys, xs = _boundaries(Y, max(Y, 1)), _boundaries(X, max(X, 1))
    if not three_d:
        zs = np.arange(Z + 1, dtype=np.int64)
    elif bz is not None:
        zs = _boundaries(Z, bz)
    else:
        zs = np.array([0, Z], np.int64)
    if (
        block is None
        and three_d
        and Z * int(np.diff(ys).max(initial=0)) * int(np.diff(xs).max(initial=0)) > MAX_BLOCK_VOXELS
    ):
        side = max(int(np.sqrt(MAX_BLOCK_VOXELS / Z)), MIN_BLOCK_SIDE)  # ~64 MiB per array
        ys, xs = _boundaries(Y, side), _boundaries(X, side)
        if bz is None and Z * side * side > MAX_BLOCK_VOXELS:  # too deep: z slabs too
            zs = _boundaries(Z, max(MAX_BLOCK_VOXELS // (side * side), 1))
    return _Grid((T, Z, Y, X), three_d, ys, xs, zs)


class _Scratch:
    """Per-block arrays between the passes: in memory, or .npy files in a temporary folder.

    Files are read through memory maps, so a halo read touches only the rows it needs; the
    folder is removed when this object is garbage collected (the lazy labels hold it).
    """

    def __init__(self, parent: str | Path | None, in_memory: bool):
        self._memory: dict | None = {} if in_memory else None
        self.folder: Path | None = None
        if not in_memory:
            if parent is None:
                self.folder = Path(tempfile.mkdtemp(prefix="grunet-segment-"))
            else:
                self.folder = temporary_sibling(parent)
                self.folder.mkdir(parents=True)
            weakref.finalize(self, shutil.rmtree, str(self.folder), True)

    def _path(self, key, name: str) -> Path:
        return self.folder / f"{name}-{'-'.join(map(str, key))}.npy"

    def put(self, key, name: str, array: np.ndarray) -> None:
        if self._memory is not None:
            self._memory[key, name] = array
        else:
            np.save(self._path(key, name), array)

    def get(self, key, name: str, region=(Ellipsis,)) -> np.ndarray:
        if self._memory is not None:
            return self._memory[key, name][region]
        mapped = open_npy(self._path(key, name))
        out = np.array(mapped[region])
        del mapped
        return out

    def drop(self, name: str) -> None:
        if self._memory is not None:
            for k in [k for k in self._memory if k[1] == name]:
                del self._memory[k]


# --------------------------------------------------------------------------- pass 1: seeds


def _reader(probs) -> Callable:
    """read(t, zslice, yslice, xslice) -> (3, z, y, x) numpy block of the probabilities."""
    if isinstance(probs, da.Array):
        return lambda t, z, y, x: np.asarray(
            probs[t, :, z, y, x].compute(scheduler=synchronous_scheduler())
        )
    return lambda t, z, y, x: np.asarray(probs[t, :, z, y, x])


def _label_block(p: np.ndarray, opts: SegmentOptions, z_faces: bool = False) -> dict:
    """Label one block's seeds once: inner seeds 1..k (small ones dropped), face pieces k+1..

    With ``z_faces`` (3D cut in z slabs) seeds on the first and last plane are face pieces too.
    """
    seed_mask, priority = _masks(p, opts)
    labels, n = ndi.label(seed_mask, structure=_STRUCTURE)
    faces = [labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    if z_faces:
        faces += [labels[0], labels[-1]]
    is_face = np.zeros(n + 1, bool)
    for face in faces:
        is_face[face.ravel()] = True
    is_face[0] = False
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    inner = ~is_face & (sizes >= opts.min_seed_size)
    inner[0] = False
    k = int(inner.sum())
    f = int(is_face.sum())
    new = np.zeros(n + 1, np.uint32)
    new[inner] = np.arange(1, k + 1, dtype=np.uint32)
    new[is_face] = np.arange(k + 1, k + f + 1, dtype=np.uint32)
    dtype = np.uint16 if k + f < 2**16 else np.uint32
    compact = new.astype(dtype)[labels]
    return {
        "seeds": compact,
        "priority": priority,
        "k": k,
        "face_sizes": sizes[is_face].astype(np.int64),  # in face-piece order (k+1..k+f)
        "faces": [compact[:, -1].copy(), compact[:, :, -1].copy()],  # bottom, right
        "tops": [compact[:, 0].copy(), compact[:, :, 0].copy()],  # top, left
        "z_faces": [compact[-1].copy(), compact[0].copy()] if z_faces else None,  # last, first
    }


_STRUCTURE = ndi.generate_binary_structure(3, 1)  # 6-connected; a 1-plane block is 4-connected


def _face_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unique (id_a, id_b) pairs of labels facing each other across a block face."""
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), np.int64)
    return np.unique(np.stack([a[both], b[both]], axis=1).astype(np.int64), axis=0)


@dataclass
class _SeedTable:
    """Per block: k inner seeds, first face-piece index, face-piece count; final ids after join."""

    k: dict = field(default_factory=dict)
    face_start: dict = field(default_factory=dict)
    face_count: dict = field(default_factory=dict)
    start: dict = field(default_factory=dict)  # ids of a block start at start + 1
    face_final: dict = field(default_factory=dict)  # final id of each face piece (0: dropped)

    def lut(self, key) -> np.ndarray:
        """Block-local seed id -> final id."""
        k, start = self.k[key], self.start[key]
        inner = np.arange(start + 1, start + k + 1, dtype=np.uint32)
        return np.concatenate([[np.uint32(0)], inner, self.face_final[key]]).astype(np.uint32)


def _seed_pass(grid: _Grid, probs, opts: SegmentOptions, scratch: _Scratch, first_id: int):
    """Pass 1: label every block's seeds into the scratch store and join them across faces."""
    read = _reader(probs)
    keys = grid.keys

    def work(key):
        t, z, _, _ = key
        ys, xs = grid.region(key)
        result = _label_block(read(t, grid.zslice(z), ys, xs), opts, grid.z_faces)
        scratch.put(key, "seeds", result.pop("seeds"))
        scratch.put(key, "priority", result.pop("priority"))
        return result

    table = _SeedTable()
    sizes, edges = [], []
    above: dict = {}  # (t, z, j) -> bottom face of the block above (one row of faces)
    below: dict = {}  # (t, i, j) -> last plane of the slab before in z (one layer of planes)
    left = None  # right face of the block to the left
    n_faces = 0
    for key, result in zip(keys, in_order(work, keys)):
        t, z, i, j = key
        k = result["k"]
        table.k[key], table.face_start[key] = k, n_faces
        table.face_count[key] = result["face_sizes"].size
        sizes.append(result["face_sizes"])
        top, left_face = result["tops"]
        sides = [
            ((t, z, i - 1, j), top, above.get((t, z, j))),
            ((t, z, i, j - 1), left_face, left if j > 0 else None),
        ]
        if result["z_faces"] is not None:
            last, first = result["z_faces"]
            sides.append(((t, z - 1, i, j), first, below.get((t, i, j)) if z > 0 else None))
            below[(t, i, j)] = last
        for neighbour, mine, other in sides:
            if other is None:
                continue
            pairs = _face_pairs(other, mine)
            if pairs.size:
                edges.append(
                    np.stack(
                        [
                            table.face_start[neighbour] + pairs[:, 0] - table.k[neighbour] - 1,
                            n_faces + pairs[:, 1] - k - 1,
                        ],
                        axis=1,
                    )
                )
        above[(t, z, j)], left = result["faces"]
        n_faces += result["face_sizes"].size
    _number_seeds(table, keys, sizes, edges, n_faces, opts, first_id)
    return table


def _number_seeds(table, keys, sizes, edges, n_faces, opts, first_id) -> None:
    """Join face pieces (union-find), drop small seeds, give consecutive ids block by block."""
    size = np.concatenate(sizes + [np.zeros(0, np.int64)])
    edges = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    graph = coo_matrix(
        (np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n_faces, n_faces)
    )
    _, component = connected_components(graph, directed=False)
    root = np.full(component.max(initial=-1) + 1, n_faces, np.int64)
    np.minimum.at(root, component, np.arange(n_faces))  # first piece in block order
    kept = np.bincount(component, weights=size, minlength=root.size) >= opts.min_seed_size
    owned = (np.arange(n_faces) == root[component]) & kept[component]
    final = np.zeros(n_faces, np.int64)
    start = first_id
    for key in keys:
        sl = slice(table.face_start[key], table.face_start[key] + table.face_count[key])
        table.start[key] = start
        mine = owned[sl]
        final[sl][mine] = start + table.k[key] + np.arange(1, int(mine.sum()) + 1)
        start += table.k[key] + int(mine.sum())
    if start > UINT32_MAX:
        raise InputError(
            None,
            f"segmentation needs {start} label ids, more than uint32 holds ({UINT32_MAX}); "
            "raise --min-size/seed thresholds or split the stack",
        )
    root_final = np.zeros(root.size, np.int64)
    root_final[component[owned]] = final[owned]
    final = np.where(kept[component], root_final[component], 0).astype(np.uint32)
    for key in keys:
        s = table.face_start[key]
        table.face_final[key] = final[s : s + table.face_count[key]]


# --------------------------------------------------------------------------- pass 2: growth


def _window(grid: _Grid, key, halo: int) -> tuple[slice, slice]:
    ys, xs = grid.region(key)
    Y, X = grid.shape[2:]
    return (
        slice(max(ys.start - halo, 0), min(ys.stop + halo, Y)),
        slice(max(xs.start - halo, 0), min(xs.stop + halo, X)),
    )


def _z_halo(opts: SegmentOptions) -> int:
    """Planes whose data a voxel's label depends on across z (growth only; holes are planar)."""
    rate_xy, rate_z = min(1.0, opts.anisotropy), min(1.0, 1.0 / opts.anisotropy)
    steps = int(round(opts.grow_radius / rate_xy))
    return int(steps * rate_z + 1e-9) + 2


def _z_window(grid: _Grid, key, opts: SegmentOptions) -> slice:
    zs = grid.zslice(key[1])
    if not grid.z_faces:
        return zs
    halo = _z_halo(opts)
    return slice(max(zs.start - halo, 0), min(zs.stop + halo, grid.shape[1]))


def _block_of(edges: np.ndarray, pixel: int) -> int:
    """Index of the block (edges from _boundaries) that holds ``pixel``."""
    return int(np.searchsorted(edges, pixel, "right")) - 1


def _grown_block(key, grid: _Grid, table: _SeedTable, scratch: _Scratch, opts) -> np.ndarray:
    """Final labels (Z, by, bx) of one block: its seeds plus a halo from the blocks around it."""
    wy, wx = _window(grid, key, opts.halo)
    wz = _z_window(grid, key, opts)
    t, z, i, j = key
    seeds = np.zeros((wz.stop - wz.start, wy.stop - wy.start, wx.stop - wx.start), np.uint32)
    priority = None
    # every block the window touches: the 8 neighbours, more where blocks are thinner than the halo
    bi = range(_block_of(grid.ys, wy.start), _block_of(grid.ys, wy.stop - 1) + 1)
    bj = range(_block_of(grid.xs, wx.start), _block_of(grid.xs, wx.stop - 1) + 1)
    bk = range(_block_of(grid.zs, wz.start), _block_of(grid.zs, wz.stop - 1) + 1)
    if not grid.z_faces:
        bk = range(z, z + 1)
    for nk, ni, nj in ((nk, ni, nj) for nk in bk for ni in bi for nj in bj):
        other = (t, nk, ni, nj)
        oy, ox = grid.region(other)
        oz = grid.zslice(nk)
        y0, y1 = max(oy.start, wy.start), min(oy.stop, wy.stop)
        x0, x1 = max(ox.start, wx.start), min(ox.stop, wx.stop)
        z0, z1 = max(oz.start, wz.start), min(oz.stop, wz.stop)
        if y0 >= y1 or x0 >= x1 or z0 >= z1:
            continue
        src = (
            slice(z0 - oz.start, z1 - oz.start),
            slice(y0 - oy.start, y1 - oy.start),
            slice(x0 - ox.start, x1 - ox.start),
        )
        dst = (
            slice(z0 - wz.start, z1 - wz.start),
            slice(y0 - wy.start, y1 - wy.start),
            slice(x0 - wx.start, x1 - wx.start),
        )
        seeds[dst] = table.lut(other)[scratch.get(other, "seeds", src)]
        part = scratch.get(other, "priority", src)
        if priority is None:
            priority = np.full(seeds.shape, -1, part.dtype)
        priority[dst] = part
    grown = _grow(seeds, priority, opts.grow_radius, opts.anisotropy)
    grown = _fill_holes(grown, opts.max_hole_size)
    ys, xs = grid.region(key)
    zs = grid.zslice(z)
    core = (
        slice(zs.start - wz.start, zs.stop - wz.start),
        slice(ys.start - wy.start, ys.stop - wy.start),
        slice(xs.start - wx.start, xs.stop - wx.start),
    )
    return np.ascontiguousarray(grown[core])


def _face_ids(labels: np.ndarray, z_faces: bool = False) -> np.ndarray:
    faces = [labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    if z_faces:
        faces += [labels[0], labels[-1]]
    ids = np.unique(np.concatenate([f.ravel() for f in faces]))
    return ids[ids > 0]


def _sizes(labels: np.ndarray, min_size: int, z_faces: bool = False) -> dict[str, np.ndarray]:
    """Pixel counts of the face-touching ids, and the inner ids under ``min_size`` px."""
    ids, counts = np.unique(labels, return_counts=True)
    at_face = np.isin(ids, _face_ids(labels, z_faces))
    small = ~at_face & (counts < min_size) & (ids > 0)
    return {"ids": ids[at_face], "counts": counts[at_face].astype(np.int64), "small": ids[small]}


def _remove_small(labels: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """Zero the ``dropped`` ids (sorted) and close the gaps: ids stay consecutive."""
    if dropped.size == 0:
        return labels
    ids, inverse = np.unique(labels, return_inverse=True)
    new = ids - np.searchsorted(dropped, ids).astype(ids.dtype)
    new[np.isin(ids, dropped) | (ids == 0)] = 0
    return new[inverse.reshape(labels.shape)].astype(labels.dtype)


def _size_pass(grid, table, scratch, opts) -> np.ndarray:
    """Grow every block into the scratch store; the sorted ids of cells under ``min_size``."""
    keys = grid.keys

    def work(key):
        labels = _grown_block(key, grid, table, scratch, opts)
        scratch.put(key, "labels", labels)
        return _sizes(labels, opts.min_size, grid.z_faces)

    ids, counts, small = [], [], []
    for part in in_order(work, keys):
        ids.append(part["ids"])
        counts.append(part["counts"])
        small.append(part["small"])
    uniq, inverse = np.unique(np.concatenate(ids + [np.zeros(0, np.uint32)]), return_inverse=True)
    total = np.bincount(
        inverse, weights=np.concatenate(counts + [np.zeros(0)]), minlength=uniq.size
    )
    dropped = np.concatenate([uniq[total < opts.min_size], *small, np.zeros(0, np.uint32)])
    return np.unique(dropped).astype(np.uint32)


# --------------------------------------------------------------------------- whole-stack driver


def _check_probs(probs) -> None:
    shape = tuple(probs.shape)
    if len(shape) != 5 or shape[1] != 3:
        raise ValueError(f"probabilities must be (T, 3, Z, Y, X), got shape {shape}")


def _assemble(make: Callable, grid: _Grid, dtype) -> da.Array:
    """Lazy (T, Z, Y, X) array with one independent task ``make(key)`` per block."""
    task = dask.delayed(make, pure=False)
    name = f"segment-{uuid.uuid4().hex}"
    rows = {}
    for key in grid.keys:
        t, z, i, j = key
        ys, xs = grid.region(key)
        zs = grid.zslice(z)
        shape = (zs.stop - zs.start, ys.stop - ys.start, xs.stop - xs.start)
        block = task(key, dask_key_name=f"{name}-{'-'.join(map(str, key))}")
        rows[key] = da.from_delayed(block, shape=shape, dtype=dtype)
    T = grid.shape[0]
    nz, ny, nx = len(grid.zs) - 1, len(grid.ys) - 1, len(grid.xs) - 1
    return da.stack(
        [
            da.concatenate(
                [
                    da.block([[rows[t, z, i, j] for j in range(nx)] for i in range(ny)])
                    for z in range(nz)
                ]
            )
            for t in range(T)
        ]
    )


def segment_probabilities(
    probs,
    *,
    options: SegmentOptions | None = None,
    block: int | tuple[int, int] | None = None,
    three_d: bool | None = None,
    first_id: int = 0,
    scratch: str | Path | None = None,
) -> da.Array:
    """Instance labels of a probability stack, computed block by block.

    Args:
        probs: (T, 3, Z, Y, X) background/interior/boundary probabilities (numpy or dask).
        options: thresholds and sizes (:class:`SegmentOptions`).
        block: YX block size (int or (by, bx)), or (bz, by, bx) to cut 3D stacks in z slabs
            too; None keeps the dask YX chunks (numpy: one block) with 3D blocks spanning all
            of Z, except that those are cut to about ``MAX_BLOCK_VOXELS`` voxels: in YX down
            to ``MIN_BLOCK_SIDE`` px, then (stacks deeper than 1024 planes) in z slabs.
            Seeds are joined across z slab faces and growth reads a z halo, as across YX.
        three_d: seeds and growth across z (default: Z > 1); else every (t, z) plane alone.
        first_id: ids start at ``first_id + 1`` (to continue numbering of another stack).
        scratch: a path whose temporary sibling folder holds the per-block intermediates
            (about 4-6 bytes per pixel, removed when the result is garbage collected); None:
            in memory for numpy input, a temporary folder for dask input.

    Returns:
        Lazy uint32 dask array (T, 1, Z, Y, X). Seeds are labelled eagerly (one pass over the
        probabilities; with ``min_size`` growth runs eagerly too); the rest runs when the
        result is computed or stored, each block independently. The labels equal those of the
        same call with any other ``block`` up to a relabelling; ids are consecutive.

    Example:
        >>> labels = segment_probabilities(probs, block=512).compute()  # doctest: +SKIP
    """
    _check_probs(probs)
    opts = options or SegmentOptions()
    Z = probs.shape[2]
    three_d = Z > 1 if three_d is None else bool(three_d)
    grid = _grid(probs, block, three_d)
    store = _Scratch(scratch, in_memory=scratch is None and not isinstance(probs, da.Array))
    table = _seed_pass(grid, probs, opts, store, first_id)
    if opts.min_size > 0:
        dropped = _size_pass(grid, table, store, opts)
        store.drop("seeds")
        store.drop("priority")

        def make(key, store=store, dropped=dropped):
            return _remove_small(store.get(key, "labels"), dropped)
    else:

        def make(key, store=store, table=table, opts=opts, grid=grid):
            return _grown_block(key, grid, table, store, opts)

    return _assemble(make, grid, np.uint32)[:, None]


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
    out = labels.compute(scheduler=threaded_scheduler())[0, 0]
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
    return np.asarray(labels[0, 0, 0].compute(scheduler=default_scheduler()))


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

    Intermediates (about 4-6 bytes per pixel) live in a hidden folder beside ``image_store``
    while it runs; memory stays bounded by a few blocks whatever the image size.

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
    if attrs.get("task") == "semantic":
        from grunet.semantic_predict import instance_only

        raise instance_only("model's probabilities", probs_path)
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
    scratch = image_store.parent / f"{image_store.name}.segment-scratch"
    remove_abandoned_temporaries(scratch)  # left by a run that was killed
    labels = segment_probabilities(
        probs, options=opts, block=block, three_d=three_d, scratch=scratch
    )
    provenance = {
        "version": __version__,
        "stage": "segment",
        "source": str(probs_path),
        "image": str(image_store),
        "model_sha256": meta.get("model_sha256"),
        "object_scale": meta.get("object_scale"),
        "channel_names": meta.get("channel_names"),  # the image's channels the model read
        "augment": meta.get("augment"),  # predictions averaged over mirror images (1 or 4)
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
