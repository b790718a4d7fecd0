"""The one exception type for bad user input: the CLI prints it and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Input the user can fix (a path, a column, a flag); the message says what and how."""


EXIT_USER_ERROR = 2
