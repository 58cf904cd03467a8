"""The project's error type for messages meant for users (bad config, input, file).

Commands print a `UserError` as one `error: <message>` line and exit with status 2; every other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A bad config value, input, file or workdir; the message says what to do."""
