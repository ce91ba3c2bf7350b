"""Errors that end a command with one clear line and a distinct exit code.

Exit codes: 0 ok, 1 a check/verify/run failed, 2 usage or input error (nothing changed),
3 some hosts failed, 4 some hosts unreachable, 5 missing privileges.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_HOSTS_FAILED = 3
EXIT_UNREACHABLE = 4
EXIT_PRIVILEGES = 5


class DlsetupError(Exception):
    """A user-facing error: ``str(err)`` is the one line shown, ``exit_code`` the process status."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(DlsetupError):
    """Bad input: a missing bundle, a malformed inventory or config, an impossible request."""

    exit_code = EXIT_USAGE
