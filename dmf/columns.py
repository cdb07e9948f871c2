"""Canonical column names of a ratings table; the only place they are spelled out."""

USER = "user"
ITEM = "item"
RATING = "rating"
TIMESTAMP = "timestamp"
PREDICTION = "prediction"
RANK = "rank"
SCORE = "score"

#: Integer positions of users and items in the model's id vocabularies (internal).
USER_INDEX = "user_index"
ITEM_INDEX = "item_index"
