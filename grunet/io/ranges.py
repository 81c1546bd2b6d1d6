"""Per-channel statistics of images too large for memory: percentiles from streamed histograms.

Integer images of up to 16 bits get an exact histogram (one bin per grey value), so their
percentiles equal ``numpy.percentile`` (linear interpolation) of the whole image exactly. Other
types (floats, 32-bit integers) take two streamed passes: the finite min/max, then a
``bins``-bin histogram over [min, max]; a percentile is interpolated inside its bin, so its error
is at most one bin width, ``(max - min) / bins`` (with the default 65,536 bins: 0.0015 % of the
dynamic range). NaN and +/-inf are counted and excluded, and so is a saturated plateau at the
maximum (:mod:`grunet.saturation`), as :func:`grunet.preprocess.percentile_range` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np

from grunet.parallel import default_scheduler, rechunk_method
from grunet.saturation import saturated_count, stands_apart

DEFAULT_PERCENTILES = (1.0, 99.8)
DEFAULT_BINS = 65536
TREE_FANOUT = 8


@dataclass
class ChannelStats:
    """Streamed statistics of one channel; merge partial ones with :meth:`merge`."""

    n: int = 0  # finite values
    n_nan: int = 0
    n_inf: int = 0
    min: float = np.inf
    max: float = -np.inf
    n_at_max: int = 0  # finite values equal to ``max``
    hist: np.ndarray | None = None  # counts, bins defined by the caller
    hist_offset: int = 0  # exact integer histograms: hist[i] counts the value hist_offset + i

    def merge(self, other: ChannelStats) -> ChannelStats:
        hist, offset = self.hist, self.hist_offset
        if other.hist is not None and hist is None:
            hist, offset = other.hist, other.hist_offset
        elif other.hist is not None:
            offset = min(self.hist_offset, other.hist_offset)
            end = max(self.hist_offset + len(self.hist), other.hist_offset + len(other.hist))
            merged = np.zeros(end - offset, np.int64)
            for part, start in ((self.hist, self.hist_offset), (other.hist, other.hist_offset)):
                merged[start - offset : start - offset + len(part)] += part
            hist = merged
        top = max(self.max, other.max)
        n_at_max = sum(s.n_at_max for s in (self, other) if s.max == top)
        return ChannelStats(
            n=self.n + other.n,
            n_nan=self.n_nan + other.n_nan,
            n_inf=self.n_inf + other.n_inf,
            min=min(self.min, other.min),
            max=top,
            n_at_max=n_at_max,
            hist=hist,
            hist_offset=offset,
        )


def exact_histogram_offset(dtype: np.dtype) -> tuple[int, int] | None:
    """(offset, n_bins) of an exact one-bin-per-value histogram, or None when too wide."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui" and dtype.itemsize <= 2:
        info = np.iinfo(dtype)
        return int(info.min), int(info.max) - int(info.min) + 1
    return None


def block_stats(
    block: np.ndarray, *, edges: tuple[float, float, int] | None = None, exact: bool = True
) -> ChannelStats:
    """Statistics of one block (one channel).

    ``exact`` uses a one-bin-per-value histogram for integers of up to 16 bits; ``edges`` =
    (low, high, bins) histograms finite values over [low, high] instead.
    """
    block = np.asarray(block)
    stats = ChannelStats()
    exact_bins = exact_histogram_offset(block.dtype) if exact else None
    if block.dtype.kind == "f":
        finite = np.isfinite(block)
        n_finite = int(np.count_nonzero(finite))
        stats.n_nan = int(np.count_nonzero(np.isnan(block)))
        stats.n_inf = int(block.size - n_finite - stats.n_nan)
        values = block[finite] if n_finite < block.size else block.ravel()
    else:
        values = block.ravel()
    stats.n = int(values.size)
    if values.size:
        top = values.max()
        stats.min = float(values.min())
        stats.max = float(top)
        stats.n_at_max = int(np.count_nonzero(values == top))
    if exact_bins is not None and values.size:  # compact: only the block's own value range
        low = int(stats.min)
        if values.dtype.kind == "u":
            counts = np.bincount(values)[low:]
        else:
            counts = np.bincount(values.astype(np.int32) - np.int32(low))
        stats.hist = counts.astype(np.int32)
        stats.hist_offset = low
    elif edges is not None:
        low, high, n_bins = edges
        if high <= low:
            high = low + 1.0
        stats.hist = np.histogram(values, bins=n_bins, range=(low, high))[0].astype(np.int32)
    return stats


def tree_reduce(parts: list, merge: Callable) -> object:
    """Combine delayed partial results pairwise-ish (fan-in ``TREE_FANOUT``), memory bounded."""
    if not parts:
        return dask.delayed(ChannelStats)()
    while len(parts) > 1:
        parts = [
            dask.delayed(_merge_many)(merge, *parts[i : i + TREE_FANOUT])
            for i in range(0, len(parts), TREE_FANOUT)
        ]
    return parts[0]


def _merge_many(merge: Callable, *items):
    result = items[0]
    for item in items[1:]:
        result = merge(result, item)
    return result


def merge_channel_dicts(a: dict[int, ChannelStats], b: dict[int, ChannelStats]) -> dict:
    out = dict(a)
    for channel, stats in b.items():
        out[channel] = out[channel].merge(stats) if channel in out else stats
    return out


def percentile_from_histogram(
    stats: ChannelStats,
    percentiles: Sequence[float],
    *,
    exact: bool = False,
    edges: tuple[float, float, int] | None = None,
) -> list[float]:
    """Percentiles from a histogram: exact for integer bins (``exact``), else within one bin.

    Mirrors ``numpy.percentile``'s default linear interpolation between order statistics. A
    saturated plateau at the maximum that stands apart from the rest is left out (it sits in
    the last non-empty bin).
    """
    if stats.hist is None or stats.n == 0:
        raise ValueError("no finite values")
    drop = saturated_count(stats.n, stats.n_at_max)
    if drop:
        counts = stats.hist.astype(np.int64)  # a copy: the stats stay as they were
        counts[np.flatnonzero(counts)[-1]] -= drop
        rest = _percentiles(stats, counts, percentiles, exact, edges)
        if stands_apart(rest[0], rest[-1], stats.max):
            return rest
    return _percentiles(stats, stats.hist, percentiles, exact, edges)


def _percentiles(stats, counts, percentiles, exact, edges) -> list[float]:
    """``percentiles`` of the values that ``counts`` (bins as in ``stats``) holds."""
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])

    def order_statistic(k: int) -> float:  # value of the k-th smallest (0-based)
        b = int(np.searchsorted(cumulative, k, side="right"))
        if exact:
            return float(b + stats.hist_offset)
        low, high, n_bins = edges
        if high <= low:
            high = low + 1.0
        width = (high - low) / n_bins
        before = int(cumulative[b - 1]) if b > 0 else 0
        inside = (k - before + 0.5) / max(int(counts[b]), 1)
        return float(min(max(low + (b + inside) * width, stats.min), stats.max))

    out = []
    for p in percentiles:
        rank = p / 100.0 * (n - 1)
        k = int(np.floor(rank))
        frac = rank - k
        value = order_statistic(k)
        if frac > 0 and k + 1 < n:
            value = value + frac * (order_statistic(k + 1) - value)
        out.append(value)
    return out


def _channel_blocks(data: da.Array, channel_axis: int):
    """Yield (channel index, delayed block) for every block of a dask array."""
    blocks = data.to_delayed()
    starts = np.cumsum((0,) + data.chunks[channel_axis])
    for index in np.ndindex(blocks.shape):
        channel_block = index[channel_axis]
        size = data.chunks[channel_axis][channel_block]
        yield int(starts[channel_block]), size, blocks[index]


def channel_stats(
    data: da.Array,
    *,
    channel_axis: int = 1,
    edges: list[tuple[float, float, int]] | None = None,
    exact: bool = True,
    callbacks: Sequence = (),
) -> dict[int, ChannelStats]:
    """Per-channel :class:`ChannelStats` of a dask array, streamed block by block."""
    data = data.rechunk({channel_axis: 1}, method=rechunk_method())
    parts = []
    for channel, _size, block in _channel_blocks(data, channel_axis):
        channel_edges = None if edges is None else edges[channel]
        parts.append(dask.delayed(_block_stats_dict)(block, channel, channel_edges, exact))
    (result,) = dask.compute(
        tree_reduce(parts, merge_channel_dicts),
        scheduler=default_scheduler(),
        callbacks=list(callbacks),
    )
    return result


def _block_stats_dict(block, channel, edges, exact):
    return {channel: block_stats(block, edges=edges, exact=exact)}


def ranges_from_stats(
    data: da.Array,
    stats: dict[int, ChannelStats],
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    *,
    channel_axis: int = 1,
    bins: int = DEFAULT_BINS,
    callbacks: Sequence = (),
) -> list[tuple[float, float]]:
    """(low, high) per channel from first-pass stats; a second pass only where not exact."""
    n_channels = data.shape[channel_axis]
    exact = exact_histogram_offset(data.dtype)
    if exact is None:
        edges = [(stats[c].min, stats[c].max, bins) for c in range(n_channels)]
        if all(np.isfinite(e[0]) for e in edges):
            stats = channel_stats(
                data, channel_axis=channel_axis, edges=edges, exact=False, callbacks=callbacks
            )
    ranges = []
    for c in range(n_channels):
        s = stats[c]
        if s.n == 0:
            ranges.append((0.0, 1.0))
            continue
        if exact is not None:
            lo, hi = percentile_from_histogram(s, percentiles, exact=True)
        else:
            lo, hi = percentile_from_histogram(s, percentiles, edges=(s.min, s.max, bins))
        ranges.append((float(lo), float(hi)))
    return ranges


def percentile_range_dask(
    data: da.Array,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    *,
    channel_axis: int = 1,
    bins: int = DEFAULT_BINS,
) -> list[tuple[float, float]]:
    """Robust (low, high) intensities per channel of a dask array, never loading it whole.

    Exact (equal to ``numpy.percentile`` on the whole channel) for integer types of up to 16 bits;
    for floats and wider integers within one histogram bin, ``(max - min) / bins``. Non-finite
    values are ignored; a channel without finite values gets (0.0, 1.0).

    Args:
        data: dask (or numpy) array with a channel axis.
        percentiles: the (low, high) percentiles.
        channel_axis: which axis holds the channels (1 for T, C, Z, Y, X).
        bins: histogram bins for floats / wide integers.

    Returns:
        One ``(low, high)`` per channel.

    Example:
        >>> import dask.array as da
        >>> x = da.arange(100, chunks=10).reshape(1, 100)
        >>> percentile_range_dask(x, (0, 100), channel_axis=0)
        [(0.0, 99.0)]
    """
    data = da.asarray(data)
    stats = channel_stats(data, channel_axis=channel_axis)
    return ranges_from_stats(data, stats, percentiles, channel_axis=channel_axis, bins=bins)
