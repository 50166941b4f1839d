"""Errors caused by the user's input: entry points print them as one line and exit non-zero."""


class UserFacingError(Exception):
    """A problem the user can fix; its message is the whole report (no traceback)."""


class ConfigError(UserFacingError):
    """A config value that cannot work, reported as `key=value: what is allowed`."""


class DataError(UserFacingError):
    """Data that is missing, malformed or does not match what the config declares."""
