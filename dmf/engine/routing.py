"""Routed factor exchange (Spark's in/out blocks): a solve task receives only the rows of the
other side that its block's ratings reference, not the whole other side.

At block-build time every block is routed once (:func:`route_block`): its distinct columns,
split by the other side's blocks, give one *route* per (source block, destination block),
and the block's columns are renumbered into the compact space of those distinct columns.
In a routed half-step, the task on the source block's worker cuts the route's rows out of
its fresh table (:func:`take_rows`); the solve task joins its pieces, in block order, into a
table whose row ``j`` is the ``j``-th distinct column, and solves the renumbered block against
it. A row's ratings are visited in the same order against the same factor values as with the
whole table, so the factors are bit-identical either way.

Implicit feedback also needs ``YᵀY`` over the whole other side: one task per half-step
computes it from the joined side (in one piece, as the all-to-all solve does) and every solve
receives that k x k matrix.

Bytes per half-step: all-to-all moves each remote block table to every worker (about
``n_workers × table``); routed moves ``Σ over blocks of its distinct referenced rows × (k + 1) × 4 B``.
Routing pays when blocks reference a small part of the other side: many blocks, a long-tailed
catalog, or a user base much larger than one block's ratings reach.
"""

from __future__ import annotations

from dataclasses import replace

import dask
import numpy as np
from dask.utils import key_split

from dmf.engine.kernels import RatingBlock
from dmf.engine.solve import FactorTable, Objective, gram_of, join_tables, solve_block
from dmf.model.params import EXCHANGES

#: ``exchange="auto"`` routes when one copy of the other side's table (factors and biases,
#: float32) would exceed this many bytes: below it, gathering the whole side costs fewer
#: tasks and its copies are small.
ROUTE_ABOVE_BYTES = 256 * 2**20


def routes_chosen(exchange: str, n_user_rows: int, n_item_rows: int, rank: int) -> bool:
    """Whether a fit exchanges factors by routes: ``exchange`` is ``"routed"``, or ``"auto"`` and
    the larger side's table exceeds :data:`ROUTE_ABOVE_BYTES`."""
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {', '.join(map(repr, EXCHANGES))}, got {exchange!r}")
    if exchange != "auto":
        return exchange == "routed"
    return max(n_user_rows, n_item_rows) * (rank + 1) * 4 > ROUTE_ABOVE_BYTES


def route_block(block: RatingBlock, other_bounds: np.ndarray) -> tuple:
    """``(compact block, rows for other block 0, rows for other block 1, …)``.

    The compact block has its columns renumbered to their rank among the block's distinct
    columns. The rows for other block ``d`` are this block's local row indices (int32,
    ascending) that have a rating in a column of block ``d``: what block ``d``'s solve needs
    of this side's table.
    """
    distinct = np.unique(block.cols)
    compact = replace(block, cols=np.searchsorted(distinct, block.cols).astype(np.int32))
    n_rows, n_other = block.n_rows, len(other_bounds) - 1
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(block.indptr))
    destination = np.searchsorted(other_bounds, block.cols, side="right") - 1
    pairs = np.unique(destination * np.int64(n_rows) + rows)
    cuts = np.searchsorted(pairs, np.arange(n_other + 1, dtype=np.int64) * n_rows)
    return (compact,) + tuple((pairs[cuts[d] : cuts[d + 1]] - d * n_rows).astype(np.int32) for d in range(n_other))


def take_rows(table: FactorTable, rows: np.ndarray) -> FactorTable:
    """The rows ``rows`` (indices into ``table``) of a factor table, as a table of their own."""
    biases = None if table.biases is None else table.biases[rows]
    return FactorTable(table.factors[rows], biases)


def whole_side_gram(tables: list[FactorTable]) -> np.ndarray:
    """``YᵀY`` of a side's block tables joined, computed in one piece as the all-to-all solve does."""
    return gram_of(join_tables(tables).factors)


def solve_routed_block(block: RatingBlock, routed: tuple, previous: FactorTable | None, global_mean: float,
                       objective: Objective, with_loss: bool) -> FactorTable:
    """Solve a compact block (see :func:`route_block`) against ``routed = (pieces, gram)``: the
    pieces routed to it, in source-block order, and the whole other side's ``YᵀY`` (implicit
    feedback; None otherwise). The arguments are those of the all-to-all solve."""
    pieces, gram = routed
    other = join_tables(pieces)
    other.gram = gram
    return solve_block(block, other, previous, global_mean, objective, with_loss)


def submit_routes(blocks: list, other_bounds: np.ndarray, placement) -> tuple[list, list]:
    """Route every block of one side where it lives: ``(compact blocks, rows for)`` where
    ``rows_for[b][d]`` is what block ``b``'s table sends to other block ``d`` (submitted)."""
    route = dask.delayed(route_block, nout=len(other_bounds), pure=True)
    outputs = []
    for b, block in enumerate(blocks):
        with placement.on_worker(b):
            routed = route(block, other_bounds)
            outputs.extend(routed[i] for i in range(len(other_bounds)))
    submitted = placement.submit(outputs)
    width = len(other_bounds)
    return ([submitted[b * width] for b in range(len(blocks))],
            [submitted[b * width + 1 : (b + 1) * width] for b in range(len(blocks))])


#: Tasks whose results are factor tables or routed pieces of them: what the exchange moves.
FACTOR_TASKS = ("initial_block_table", "solve_user_block", "solve_item_block", "solve_routed_block", "take_rows")


def factor_bytes_moved(client) -> int:
    """Bytes of factor tables and routed pieces the workers fetched from each other since the
    last call (from their transfer logs, in Dask's size estimates; the logs are cleared). A
    worker's log keeps its last 1000 transfers (``distributed.admin.low-level-log-length``)."""

    def collect(dask_worker) -> int:
        total = sum(nbytes for entry in dask_worker.transfer_incoming_log for key, nbytes in entry["keys"].items()
                    if key_split(key) in FACTOR_TASKS)
        dask_worker.transfer_incoming_log.clear()
        return total

    return sum(client.run(collect).values())
