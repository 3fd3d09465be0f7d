"""The one exception type users see: the CLI turns it into a message and exit code 1."""


class SrSearchError(Exception):
    """Bad input: the message names the file/field, the bad value and what is allowed."""
