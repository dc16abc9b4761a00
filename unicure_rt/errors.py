"""The one exception type that reaches a user."""

UPDATE_HINT = "Update unicure-rt (pull its repository, then `pip install .`)"
"""How to get a newer unicure-rt: there is no release on a package index yet."""


class UserError(Exception):
    """Bad input, option or bundle: a one-paragraph message saying what is wrong and how to fix it.

    The CLI prints the message (no traceback) and exits with a non-zero status; anything else
    raised is a bug in unicure-rt.
    """
