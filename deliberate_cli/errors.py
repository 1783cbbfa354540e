"""The one exception type for mistakes a user can make; the CLI prints it as one line and exits 2."""


class DacliError(Exception):
    """Bad input, missing files, unknown options: anything the user can fix without reading code."""
