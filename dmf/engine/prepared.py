"""Ratings prepared once for blocked training: vocabularies, statistics and the user and item
blocks on the workers. A fit prepares its own; a search prepares one per fold and hands it to
every setting's fit (:mod:`dmf.model_selection`), so the ratings are read and blocked once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import dask.dataframe as dd

from dmf import progress, scheduler
from dmf.data.ids import IdVocabulary
from dmf.engine.blocks import build_rating_blocks
from dmf.engine.layout import BlockLayout
from dmf.engine.placement import Placement
from dmf.engine.ratings_pass import ids_and_stats
from dmf.engine.routing import submit_routes

logger = logging.getLogger(__name__)


@dataclass
class PreparedRatings:
    """The training ratings of one fit (or of every fit of a search fold).

    ``user_blocks``/``item_blocks`` are futures on a cluster (values without one), block ``b``
    on the worker of slot ``b``; ``ratings`` is the source they were built from (to rebuild
    them after a lost worker); ``cache`` holds what fits on these blocks share (validation
    blocks, the seen items)."""

    ratings: dd.DataFrame
    user_ids: IdVocabulary
    item_ids: IdVocabulary
    n_ratings: int
    global_mean: float
    rating_range: tuple[float, float]
    user_layout: BlockLayout
    item_layout: BlockLayout
    user_blocks: list = field(default_factory=list)
    item_blocks: list = field(default_factory=list)
    cache: dict = field(default_factory=dict)

    def rebuild(self, placement: Placement) -> PreparedRatings:
        """New blocks from the source (after a lost worker), for the caller alone."""
        fresh = PreparedRatings(self.ratings, self.user_ids, self.item_ids, self.n_ratings, self.global_mean,
                                self.rating_range, self.user_layout, self.item_layout)
        fresh._submit_blocks(placement)
        return fresh

    def routes(self, placement: Placement) -> tuple:
        """The blocks' routing for routed factor exchange (see :mod:`dmf.engine.routing`),
        submitted once and shared by every fit on these blocks: ``(compact user blocks, user
        rows for each item block, compact item blocks, item rows for each user block)``."""
        if "routes" not in self.cache:
            self.cache["routes"] = (submit_routes(self.user_blocks, self.item_layout.bounds, placement)
                                    + submit_routes(self.item_blocks, self.user_layout.bounds, placement))
        return self.cache["routes"]

    def _submit_blocks(self, placement: Placement, on_partitions=None) -> None:
        """Submit the blocks; ``on_partitions`` places the splits (default: read from the
        workers now, as after a lost worker)."""
        client = placement.client
        user_blocks, item_blocks = build_rating_blocks(
            self.ratings, scheduler.broadcast(self.user_ids, client), scheduler.broadcast(self.item_ids, client),
            self.user_layout, self.item_layout, placement=placement.on_worker,
            split_placement=on_partitions or placement.on_partitions(self.ratings),
        )
        blocks = placement.submit(user_blocks + item_blocks)
        self.user_blocks, self.item_blocks = blocks[: len(user_blocks)], blocks[len(user_blocks) :]
        if progress.live():  # the bar of the block build; otherwise the first epoch waits for the blocks
            scheduler.wait_with_progress(blocks, "blocks")
        logger.info("blocking %d ratings of %d users x %d items into %d user and %d item blocks", self.n_ratings,
                    len(self.user_ids), len(self.item_ids), len(self.user_blocks), len(self.item_blocks))


def rating_stats(ratings: dd.DataFrame, client, on_partitions=None) -> tuple:
    """The one pass a fit starts with: ``(user ids, item ids, count, mean, (min, max))`` of
    ``ratings`` (vocabularies as :class:`IdVocabulary`); refuses an empty table.
    ``on_partitions`` places the pass's tasks (see :meth:`Placement.on_partitions`)."""
    ((user_unique, item_unique, (total, count, low, high)),) = scheduler.compute(
        [ids_and_stats(ratings, placement=on_partitions)], client)
    if count == 0:
        raise ValueError("no ratings to train on: the ratings table is empty (after any threshold)")
    return IdVocabulary(user_unique), IdVocabulary(item_unique), int(count), total / count, (low, high)


def prepare_ratings(ratings: dd.DataFrame, n_blocks: int | None, client=None,
                    placement: Placement | None = None, grains: int | None = None) -> PreparedRatings:
    """The vocabularies and rating statistics of ``ratings`` (canonical columns, validated),
    then the blocks, submitted and not waited for. ``grains``: block boundaries on whole
    grains (see :class:`BlockLayout`)."""
    client = scheduler.resolve_client(client)
    placement = placement or Placement(client)
    on_partitions = placement.on_partitions(ratings)  # one look at where the partitions are, for both passes
    user_ids, item_ids, count, mean, rating_range = rating_stats(ratings, client, on_partitions)
    n_blocks = n_blocks or scheduler.total_threads(client)
    prepared = PreparedRatings(ratings, user_ids, item_ids, count, mean, rating_range,
                               BlockLayout(len(user_ids), n_blocks, grains=grains),
                               BlockLayout(len(item_ids), n_blocks, grains=grains))
    prepared._submit_blocks(placement, on_partitions)
    return prepared
