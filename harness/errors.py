"""One exception type for user-facing failures: the CLI prints it as one line and exits non-zero."""


class HarnessError(Exception):
    """A problem with the user's input (file, key, plugin name), worded to name what is wrong."""
