"""dmf's one warning class (errors are the built-in TypeError and ValueError)."""


class DmfWarning(UserWarning):
    """Something dmf worked around, e.g. a warm-start model it could not use."""
