"""Ratings in: ingest and validation (:mod:`~dmf.data.ratings`), id vocabularies
(:mod:`~dmf.data.ids`), train/test splits (:mod:`~dmf.data.splits`)."""
