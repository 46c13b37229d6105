"""The one exception type for problems with the user's input or machine (as opposed to bugs in ffmix)."""


class FfmixError(ValueError):
    """A problem with the user's input or environment, phrased for the user: what, which value, what to do.

    A ``ValueError``, so code that catches ``ValueError`` around ffmix calls keeps working; the command line
    prints these as one line and anything else as a traceback with a request for a bug report.
    """


class FfmixWarning(UserWarning):
    """Something in the user's input that ffmix worked around (e.g. a symbolic-link cycle it did not follow);
    the command line prints these as ``ffmix COMMAND: warning: ...`` lines."""
