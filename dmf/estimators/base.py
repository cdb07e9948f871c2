"""What every dmf estimator shares: parameters from its spec, the fitted model, scoring,
persistence. A new estimator declares its parameters and implements :meth:`Estimator._fit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import progress, scheduler
from dmf.columns import ITEM, USER
from dmf.data.features import encode_features
from dmf.data.ratings import read_ratings
from dmf.engine.validation import ValidationSpec
from dmf.errors import DmfWarning
from dmf.estimators.serving import Serving
from dmf.frames import as_dask_frame, require_columns
from dmf.model.fitted import FittedModel
from dmf.model.params import param_specs, parameters_doc
from dmf.model.persistence import load_model, save_model
from dmf.stages.coldstart import with_cold_rows
from dmf.stages.predict import predict_stage
from dmf.stages.serving import pair_rows
from dmf.stages.topk import recommend_stage

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

#: What ``fit`` reads: a Parquet path, or a pandas or Dask DataFrame (see :func:`dmf.read_ratings`).
RatingsSource = str | os.PathLike | pd.DataFrame | dd.DataFrame
#: (user, item) pairs: a pandas or Dask DataFrame with ``user`` and ``item`` columns.
Pairs = pd.DataFrame | dd.DataFrame

#: Estimator classes by name, as written in model manifests (filled by :func:`estimator`).
ESTIMATORS: dict[str, type[Estimator]] = {}


def estimator(cls: type) -> type:
    """Class decorator of an estimator: its annotated ``param(...)`` fields become the
    constructor (keyword-only), ``get_params`` and validation; ``{parameters}`` in its
    docstring becomes the numpydoc Parameters section; ``load`` finds it by name."""
    cls = dataclasses.dataclass(kw_only=True, repr=False, eq=False)(cls)
    if cls.__doc__ and "{parameters}" in cls.__doc__:
        cls.__doc__ = cls.__doc__.replace("{parameters}", parameters_doc(cls))
    ESTIMATORS[cls.__name__] = cls
    return cls


def _fitted_attribute(name: str, doc: str):
    def read(self):
        model = self.__dict__.get("model_")
        if model is None:
            raise AttributeError(f"{type(self).__name__} is not fitted yet (no {name}_): call fit(ratings) or "
                                 f"{type(self).__name__}.load(directory)")
        return _FITTED[name](model)

    return property(read, doc=doc)


def _zeros_if_none(biases: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.float32) if biases is None else biases


_FITTED = {
    "user_ids": lambda m: m.user_ids.ids,
    "item_ids": lambda m: m.item_ids.ids,
    "user_factors": lambda m: m.user_factors,
    "item_factors": lambda m: m.item_factors,
    "user_biases": lambda m: _zeros_if_none(m.user_biases, len(m.user_ids)),
    "item_biases": lambda m: _zeros_if_none(m.item_biases, len(m.item_ids)),
    "global_mean": lambda m: float(m.global_mean),
    "rating_range": lambda m: tuple(m.rating_range),
    "history": lambda m: m.history,
    "n_ratings": lambda m: m.n_ratings,
    "n_blocks": lambda m: m.n_blocks,
}


class Estimator(Serving):
    """Base of the dmf estimators (see :func:`estimator`).

    Fitted attributes (read from ``model_``, the :class:`~dmf.model.FittedModel`):
    ``user_ids_``, ``item_ids_`` (pandas.Index, sorted; row ``j`` of the factor matrices
    belongs to id ``j``), ``user_factors_``, ``item_factors_`` (float32, (n, rank)),
    ``user_biases_``, ``item_biases_`` (float32, (n,); zeros for a model without biases),
    ``global_mean_``, ``rating_range_``, ``history_`` (one dict per epoch), ``n_ratings_``,
    ``n_blocks_``.
    """

    model_: FittedModel | None
    #: Whether predictions are ratings (evaluated and gated by RMSE); False for models whose
    #: scores only rank items (evaluated and gated by ranking metrics).
    predicts_ratings: ClassVar[bool] = True
    #: Scoring defaults for estimators without these parameters.
    unknown: ClassVar[str] = "bias"
    clip: ClassVar[bool] = False

    user_ids_ = _fitted_attribute("user_ids", "Sorted training user ids.")
    item_ids_ = _fitted_attribute("item_ids", "Sorted training item ids.")
    user_factors_ = _fitted_attribute("user_factors", "User factors, float32 (n_users, rank).")
    item_factors_ = _fitted_attribute("item_factors", "Item factors, float32 (n_items, rank).")
    user_biases_ = _fitted_attribute("user_biases", "User biases, float32 (n_users,).")
    item_biases_ = _fitted_attribute("item_biases", "Item biases, float32 (n_items,).")
    global_mean_ = _fitted_attribute("global_mean", "Mean training rating.")
    rating_range_ = _fitted_attribute("rating_range", "(smallest, largest) training rating.")
    history_ = _fitted_attribute("history", "One record per epoch.")
    n_ratings_ = _fitted_attribute("n_ratings", "Training ratings.")
    n_blocks_ = _fitted_attribute("n_blocks", "Blocks per side used in training.")

    def __post_init__(self) -> None:
        self.model_ = None
        self.check_params()

    # -- parameters ---------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments; ``type(m)(**m.get_params())`` builds an equal, unfitted model."""
        return {spec.name: getattr(self, spec.name) for spec in param_specs(self)}

    def set_params(self, **params: Any) -> Self:
        """Change parameters (validated); returns ``self``."""
        known = {spec.name for spec in param_specs(self)}
        for name, value in params.items():
            if name not in known:
                raise TypeError(f"{type(self).__name__} has no parameter {name!r} (parameters: {', '.join(sorted(known))})")
            setattr(self, name, value)
        self.check_params()
        return self

    def check_params(self) -> None:
        """Raise ``TypeError``/``ValueError`` naming the first invalid parameter."""
        for spec in param_specs(self):
            spec.check(getattr(self, spec.name))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    # -- training -----------------------------------------------------------------------------
    def fit(self, ratings: RatingsSource, *, client: Client | None = None, validate: bool = True,
            warm_start: Estimator | FittedModel | None = None, user_features: pd.DataFrame | None = None,
            item_features: pd.DataFrame | None = None, verbose: bool = False, validation: RatingsSource | None = None,
            patience: int | None = None) -> Self:
        """Fit on a ratings table; returns ``self``.

        Parameters
        ----------
        ratings
            Anything :func:`dmf.read_ratings` accepts (Parquet path, pandas or Dask
            DataFrame with canonical columns ``user, item, rating``).
        client : distributed.Client, optional
            Default: the current client; without one the local Dask scheduler is used.
        validate
            Run :func:`dmf.read_ratings` on ``ratings`` first. Pass ``False`` for a frame
            that already came out of it.
        warm_start
            A fitted estimator or model whose factors start the users and items it knows
            (others start from the seed). One with NaN or infinite values is ignored with a
            :class:`dmf.errors.DmfWarning`.
        user_features, item_features
            Side information: a pandas table of attributes per user (column ``user``) or
            item (column ``item``); numeric columns, text or categorical columns and columns
            of lists (genres) are encoded (:func:`dmf.data.features.encode_features`). Ids in
            the table without ratings get factors and a bias from their attributes, by a
            ridge mapping (``feature_reg``) learned on the trained ids (Gantner et al. 2010);
            ids with neither ratings nor attributes keep the bias fallback.
        verbose
            Print dmf's log lines (one per epoch, with its metric and seconds) to stderr for
            this call, without configuring logging.
        validation
            Held-out ratings (what ``ratings`` may be) scored after every epoch on the
            workers, from blocks built once (no further pass over the source): ``history_``
            records ``validation_rmse`` and ``validation_mae`` (predictions as ``predict``
            makes them), or for a model whose scores only rank items (``ImplicitALS``, after
            its ``threshold``) ``validation_ndcg@10`` and ``validation_precision@10`` of each
            validation user's top-10 among the items it did not train on. Pairs with ids the
            training data lacks are left out (``validation_pairs``/``validation_users`` count
            the rest). Not for ``SVD``, which has no epochs.
        patience
            With ``validation``: stop after this many epochs without a better validation
            score; the model keeps the best epoch's factors (its ``history_`` record says
            ``"kept": True``). None: run ``max_iter`` epochs and keep the last.
        """
        with _logging_to_stderr(verbose):
            return self._fit_and_map(ratings, client, validate, warm_start, user_features, item_features,
                                     self._validation_spec(validation, patience, validate))

    def _validation_spec(self, validation, patience, validate: bool) -> ValidationSpec | None:
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise ValueError(f"patience must be a positive integer or None, got {patience!r}")
        if validation is None:
            if patience is not None:
                raise ValueError("patience needs validation=: early stopping watches the validation score")
            return None
        frame = isinstance(validation, (pd.DataFrame, dd.DataFrame))
        pairs = as_dask_frame(validation, "validation") if frame and not validate else read_ratings(validation)
        return ValidationSpec(self._prepare(pairs), clip=bool(self.clip), patience=patience)

    def _fit_and_map(self, ratings, client, validate, warm_start, user_features, item_features,
                     validation: ValidationSpec | None = None) -> Self:
        self.check_params()
        for id_column, features in ((USER, user_features), (ITEM, item_features)):
            if features is not None:
                encode_features(features, id_column)  # bad side information fails before the fit
        frame = read_ratings(ratings) if validate else as_dask_frame(ratings, "ratings")
        if isinstance(warm_start, Estimator):
            warm_start = warm_start.fitted_model()
        if warm_start is not None:
            try:
                warm_start.check_finite()
            except ValueError as problem:  # a poisoned model must not block every later fit
                message = f"warm start ignored, starting from the seed instead: {problem}"
                logger.warning(message)
                warnings.warn(message, DmfWarning, stacklevel=2)
                warm_start = None
        client = scheduler.resolve_client(client)
        model = self._fit(frame, client=client, warm_start=warm_start, validation=validation)
        dropped = self._dropped_ratings(frame)
        if dropped is not None and model.seen is not None:  # rated, though not trained on: seen all the same
            model = model.replace(seen=model.seen.with_pairs(*pair_rows(model, dropped, client)))
        for side, features in (("users", user_features), ("items", item_features)):
            if features is not None:
                model = with_cold_rows(model, side, features, float(getattr(self, "feature_reg", 10.0)),
                                       bool(getattr(self, "nonnegative", False)))
        self.model_ = model
        return self

    def _fit(self, ratings: dd.DataFrame, *, client, warm_start: FittedModel | None,
             validation: ValidationSpec | None = None) -> FittedModel:
        raise NotImplementedError

    def fitted_model(self) -> FittedModel:
        """The :class:`~dmf.model.FittedModel` (raises if not fitted)."""
        if getattr(self, "model_", None) is None:
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit(ratings) or "
                               f"{type(self).__name__}.load(directory)")
        return self.model_

    # -- scoring ------------------------------------------------------------------------------
    def predict(self, pairs: Pairs, *, client: Client | None = None) -> dd.DataFrame:
        """Predicted ratings: a Dask DataFrame ``user, item, prediction`` (float32).

        ``pairs`` is a pandas or Dask DataFrame with ``user`` and ``item`` columns; other
        columns are ignored. Unknown ids follow the ``unknown`` policy.
        """
        model = self.fitted_model()
        pairs = as_dask_frame(pairs, "pairs")
        require_columns(pairs, [USER, ITEM], "pairs")
        client = scheduler.resolve_client(client)
        return predict_stage(scheduler.broadcast(model.without_seen(), client), pairs[[USER, ITEM]], self.unknown,
                             bool(self.clip))

    def recommend(self, k: int = 10, users: Iterable | None = None, exclude: Pairs | None = None, *,
                  exclude_seen: bool = True, items: Iterable | None = None, history: Pairs | None = None,
                  client: Client | None = None) -> dd.DataFrame:
        """Top-``k`` items per user: a Dask DataFrame ``user, rank, item, score``.

        Parameters
        ----------
        k
            Items per user; users with fewer than ``k`` items left after exclusion get
            fewer rows.
        users
            Ids to recommend for (default: every training user). Ids unknown to the model
            get the bias model's ranking with ``unknown="bias"``, and no rows with ``"nan"``
            or ``"drop"``.
        exclude
            Pandas or Dask DataFrame of further ``user, item`` pairs never to recommend.
        exclude_seen
            Never recommend an item the user interacted with in training (the model keeps
            these; a model loaded from a directory saved with ``seen=False`` has none).
        items
            Candidate item ids (for example from a retrieval stage): rank only these; ids
            the model does not know are left out.
        history
            Ratings (``user, item, rating``) of users to fold in for this call only (see
            :meth:`fold_in`; the model is not changed); ``users`` defaults to theirs.

        Returns
        -------
        dask.dataframe.DataFrame
            ``rank`` 1 is the best; ``score`` is the unclipped predicted rating; ties break
            by the lower item index (item order of ``item_ids_``).
        """
        client = scheduler.resolve_client(client)
        source = self
        if history is not None:
            source = self.fold_in(history, client=client)
            if exclude_seen:  # every history item, also those a threshold leaves out of the fold-in
                pairs = history[[USER, ITEM]]
                exclude = pairs if exclude is None else dd.concat([as_dask_frame(exclude, "exclude")[[USER, ITEM]],
                                                                    as_dask_frame(pairs, "history")])
            if users is None:
                users = pd.unique(as_dask_frame(history, "history")[USER].compute()) if isinstance(
                    history, dd.DataFrame) else pd.unique(history[USER])
        model = source.fitted_model()
        if items is not None:
            model = model.only_items(model.item_ids.index_of(pd.Index(list(items))))
        n_blocks = getattr(self, "n_blocks", None) or 2 * scheduler.total_threads(client)
        return recommend_stage(model, k, users, exclude, bool(exclude_seen), n_blocks, client, self.unknown)

    def _objective(self):
        """The training objective fold-in solves (estimators that support fold-in define it)."""
        raise NotImplementedError(f"{type(self).__name__} does not support fold-in")

    def _dropped_ratings(self, ratings: dd.DataFrame) -> dd.DataFrame | None:
        """The ratings the transform leaves out of training (None when it keeps them all)."""
        return None

    def _ratings_transform(self) -> tuple | None:
        """``(function, args)`` that turns a pandas partition of ratings into what the
        estimator trains on (``function(part, *args)``), or None when it trains on them as given."""
        return None

    def _prepare(self, ratings: dd.DataFrame) -> dd.DataFrame:
        transform = self._ratings_transform()
        return ratings if transform is None else ratings.map_partitions(transform[0], *transform[1],
                                                                        meta=ratings._meta)

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, *, overwrite: bool = False, seen: bool = True) -> Path:
        """Write the model to ``directory`` (JSON manifest + Parquet), atomically.

        ``seen`` keeps the training interactions, so that the loaded model excludes what
        each user has seen from recommendations (about 4 bytes per training rating).
        """
        model = self.fitted_model().replace(params=self.get_params())
        return save_model(model, directory, overwrite=overwrite, seen=seen)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Estimator:
        """Read a model written by :meth:`save`; needs no cluster. ``Estimator.load`` (or
        :func:`dmf.load`) returns whichever estimator wrote it; ``ALS.load`` requires an ALS."""
        model = load_model(directory)
        found = ESTIMATORS.get(model.estimator)
        if found is None or not issubclass(found, cls):
            raise ValueError(f"{directory} holds a {model.estimator!r} model, not {cls.__name__}")
        try:
            estimator_ = found(**model.params)
        except TypeError as problem:  # a parameter this dmf does not know, or of the wrong type
            raise ValueError(f"{directory} holds parameters {found.__name__} refuses: {problem}") from problem
        estimator_.model_ = model
        return estimator_


@contextlib.contextmanager
def _logging_to_stderr(enabled: bool):
    """While active (if ``enabled``), the ``dmf`` logger's INFO lines go to stderr."""
    if not enabled:
        yield
        return
    handler = progress.ProgressHandler(sys.stderr)  # on a terminal, also the bar of the running stage
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    dmf_logger = logging.getLogger("dmf")
    level = dmf_logger.level
    dmf_logger.addHandler(handler)
    dmf_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        dmf_logger.removeHandler(handler)
        handler.close()
        dmf_logger.setLevel(level)


def load(directory: str | os.PathLike) -> Estimator:
    """The estimator saved in ``directory``, whichever kind it is."""
    return Estimator.load(directory)

