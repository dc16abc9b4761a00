"""The one exception type that reaches a user."""


class UserError(Exception):
    """Bad input, option or bundle: a one-paragraph message saying what is wrong and how to fix it.

    The CLI prints the message (no traceback) and exits with a non-zero status; anything else
    raised is a bug in unicure-rt.
    """
