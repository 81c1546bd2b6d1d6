"""Which pixels at an image's maximum to leave out of its intensity range.

A detector clips every pixel brighter than its ceiling to one value, so a few saturated nuclei
form a flat plateau at the image's maximum. Counted into the upper percentile, that plateau
sets the top of the range, and the ordinary nuclei are squeezed into a tenth of it. Its pixels
say nothing about the brightness of the rest, so the robust range is taken without them.
"""

from __future__ import annotations

MIN_PLATEAU_PIXELS = 9  # fewer values at the maximum are hot pixels, not a clipped object
MAX_PLATEAU_SHARE = 0.5  # at least this share at the maximum: the image itself is flat/binary


def saturated_count(n_values: int, n_at_max: int) -> int:
    """How many of ``n_values`` (those at the maximum: ``n_at_max``) to drop from percentiles.

    Example:
        >>> saturated_count(10_000, 300), saturated_count(10_000, 2), saturated_count(10, 9)
        (300, 0, 0)
    """
    if MIN_PLATEAU_PIXELS <= n_at_max < MAX_PLATEAU_SHARE * n_values:
        return int(n_at_max)
    return 0
