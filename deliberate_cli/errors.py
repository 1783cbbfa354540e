"""The one exception type for mistakes a user can make; the CLI prints it as one line and exits 2."""


class DacliError(Exception):
    """Bad input, missing files, unknown options: anything the user can fix without reading code."""


class GaveUp(DacliError):
    """A model endpoint kept failing (rate limits, server errors, timeouts) for longer than its engine's
    retry_budget. What was answered is kept; the same command goes on from there."""
