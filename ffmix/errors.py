"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class FfmixError(Exception):
    """A problem with the user's input or environment, phrased for the user: what, which value, what to do."""
