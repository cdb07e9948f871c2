"""The block layout: which contiguous index range of rows each block owns.

Training (user and item blocks), the recommendation stage (blocks of requested users) and
the initial factor tables all cut rows with one :class:`BlockLayout`, so their boundaries
agree by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class BlockLayout:
    """``n_rows`` rows cut into near-equal contiguous blocks.

    At most ``requested_blocks`` blocks, never more blocks than rows, at least one. Block
    ``b`` owns rows ``bounds[b] .. bounds[b + 1] - 1``.
    """

    n_rows: int
    requested_blocks: int
    #: When set, the rows are first cut into this many *grains* (near-equal, fixed by
    #: ``n_rows`` alone) and every block is a run of whole grains: a per-grain result (a
    #: Gram matrix) is then the same whatever the number of blocks.
    grains: int | None = None

    @cached_property
    def bounds(self) -> np.ndarray:
        """Boundaries (int64, length ``n_blocks + 1``)."""
        if self.grains is not None:
            grain_bounds = self.grain_bounds
            n_grains = len(grain_bounds) - 1
            n_blocks = max(1, min(int(self.requested_blocks), n_grains))
            return grain_bounds[(np.arange(n_blocks + 1, dtype=np.int64) * n_grains) // n_blocks]
        n_blocks = max(1, min(int(self.requested_blocks), max(int(self.n_rows), 1)))
        return (np.arange(n_blocks + 1, dtype=np.int64) * int(self.n_rows)) // n_blocks

    @cached_property
    def grain_bounds(self) -> np.ndarray:
        """Boundaries of the grains (the blocks of ``BlockLayout(n_rows, grains)``)."""
        return BlockLayout(self.n_rows, self.grains or 1).bounds

    @property
    def n_blocks(self) -> int:
        return len(self.bounds) - 1

    def rows(self, block: int) -> tuple[int, int]:
        """(first row, one past the last row) of ``block``."""
        return int(self.bounds[block]), int(self.bounds[block + 1])

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        """(block, first row, stop row) per block, in order."""
        for block in range(self.n_blocks):
            yield (block, *self.rows(block))
