"""The one exception type a user ever sees (as a one-line message, exit code 2)."""


class DualsparseError(Exception):
    """A user-facing problem. The message says what is wrong and how to fix it."""
