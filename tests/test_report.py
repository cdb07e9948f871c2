"""The run reports' numbers: histograms of ratings and predictions, and the top-k's catalog
reach, checked against NumPy/pandas on the same model (session cluster)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_ratings

import dmf
from dmf.pipeline.report import write_report
from dmf.stages.histograms import rating_histograms, top_k_reach


@pytest.fixture(scope="module")
def ratings():
    return random_ratings(70, 40, 0.3, seed=9)


def test_histograms_equal_numpy_on_the_models_predictions(client, ratings):
    model = dmf.ALS(rank=3, max_iter=3, seed=2, clip=False).fit(ratings, client=client)
    histograms = rating_histograms(model, ratings, bins=8, client=client)
    low, high = model.rating_range_
    edges = np.linspace(low, high, 9)
    assert histograms["edges"] == pytest.approx(edges.tolist())
    assert histograms["ratings"] == np.histogram(ratings["rating"], bins=edges)[0].tolist()
    predicted = model.predict(ratings[["user", "item"]], client=client).compute()["prediction"].to_numpy(dtype=np.float64)
    # unclipped predictions outside the range are counted in the end bins
    assert histograms["predictions"] == np.histogram(np.clip(predicted, low, high), bins=edges)[0].tolist()
    assert histograms["pairs"] == len(ratings) == sum(histograms["predictions"])


def test_ranking_models_get_no_prediction_histogram(client, ratings):
    model = dmf.ImplicitALS(rank=2, max_iter=2, seed=1).fit(ratings, client=client)
    histograms = rating_histograms(model, ratings, bins=4, client=client)
    assert histograms["predictions"] is None and sum(histograms["ratings"]) == len(ratings)


def test_top_k_reach_counts_users_per_item(client, ratings, tmp_path):
    model = dmf.ALS(rank=3, max_iter=2, seed=2).fit(ratings, client=client)
    top = model.recommend(5, client=client)
    reach = top_k_reach(top, len(model.item_ids_), 5, client=client)
    per_item = top.compute()["item"].value_counts().to_numpy()
    assert reach["recommended_items"] == len(per_item) and reach["catalog_items"] == len(model.item_ids_)
    edges = reach["users_per_item"]["edges"]
    assert edges[0] == 1 and edges[-1] > per_item.max()
    assert reach["users_per_item"]["counts"] == np.histogram(per_item, bins=edges)[0].tolist()
    page = write_report(tmp_path / "report.html", "t", {"top_k": reach,
                                                         "histograms": {**rating_histograms(model, ratings, client=client),
                                                                        "of": "training ratings"}}).read_text()
    assert f"{reach['recommended_items'] / reach['catalog_items']:.1%} of the items" in page
    assert page.count('fill="#2ca02c"') >= 3  # histogram bars: ratings, predictions, users per item
