"""Which pixels at an image's maximum to leave out of its intensity range.

A detector clips every pixel brighter than its ceiling to one value, so a few saturated nuclei
form a flat plateau at the image's maximum. Counted into the upper percentile, that plateau
sets the top of the range, and the ordinary nuclei are squeezed into a tenth of it. Its pixels
say nothing about the brightness of the rest, so the robust range is taken without them, but
only where the plateau stands apart from the rest (:func:`stands_apart`). An overexposed image,
whose brightest nuclei all run into the ceiling, has a plateau too, right on top of the
nuclei's own range; leaving it out there gains nothing, and on a sparse field whose only nuclei
are clipped it would stretch the range over the background noise (a val image with one nucleus,
its brightest 1 % clipped: twice as many noise specks taken for cells).
"""

from __future__ import annotations

MIN_PLATEAU_PIXELS = 9  # fewer values at the maximum are hot pixels, not a clipped object
MAX_PLATEAU_SHARE = 0.5  # at least this share at the maximum: the image itself is flat/binary
APART = 0.5  # the rest's upper percentile below this fraction of the plateau (above the low end)


def saturated_count(n_values: int, n_at_max: int) -> int:
    """How many of ``n_values`` (those at the maximum: ``n_at_max``) to drop from percentiles.

    Example:
        >>> saturated_count(10_000, 300), saturated_count(10_000, 2), saturated_count(10, 9)
        (300, 0, 0)
    """
    if MIN_PLATEAU_PIXELS <= n_at_max < MAX_PLATEAU_SHARE * n_values:
        return int(n_at_max)
    return 0


def stands_apart(low: float, high: float, top: float) -> bool:
    """True where the plateau at ``top`` lies far above the rest's range ``(low, high)``.

    Example:
        >>> stands_apart(0.0, 100.0, 1000.0), stands_apart(0.0, 240.0, 255.0)
        (True, False)
    """
    return high - low <= APART * (top - low)
