"""Dask stages over a fitted model: prediction (:mod:`~dmf.stages.predict`), top-k
(:mod:`~dmf.stages.topk`), rating metrics (:mod:`~dmf.stages.metrics`) and ranking metrics
(:mod:`~dmf.stages.ranking`)."""
