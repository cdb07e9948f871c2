"""The new estimators' defaults on GroupLens' ml-100k u1 split (slow: real data)."""

import pytest
from helpers import ml100k_fold

import dmf


@pytest.mark.slow
def test_default_sgd_reaches_als_accuracy_on_ml100k_u1(client, ml100k):
    train, test = ml100k_fold(ml100k)
    model = dmf.SGD().fit(train)
    result = dmf.rmse(model, test)
    print(f"SGD u1 RMSE {float(result):.4f}")
    assert result <= 0.922  # ALS() 0.9197; Surprise SVD (mean u1..u5, published) 0.934
    losses = [record["train_rmse"] for record in model.history_]
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_svd_ranks_ml100k_u1_at_least_as_well_as_implicit_als(client, ml100k):
    train, test = ml100k_fold(ml100k)
    model = dmf.SVD().fit(train)
    ranking = dmf.ranking_metrics(model.recommend(10, exclude=train), test, k=10, relevance_threshold=4,
                                  precision_denominator="min", catalog=train)
    print(f"SVD u1 precision@10 {ranking['precision@k']:.4f} NDCG@10 {ranking['ndcg@k']:.4f}")
    assert ranking["precision@k"] >= 0.401  # ALS() explicit 0.1394, ImplicitALS(threshold=4) 0.4008


@pytest.mark.slow
def test_a_short_bpmf_chain_beats_als_on_ml100k_u1(client, ml100k):
    """50 sweeps (a quarter of the defaults, to keep the suite fast): already below ALS's 0.9197;
    the defaults' 0.9065 on u1 (mean u1..u5 under 0.900) is measured by bench_estimators.py."""
    train, test = ml100k_fold(ml100k)
    model = dmf.BPMF(burn_in=10, n_samples=40).fit(train)
    result = dmf.rmse(model, test)
    print(f"BPMF (50 sweeps) u1 RMSE {float(result):.4f}")
    assert result <= 0.912
