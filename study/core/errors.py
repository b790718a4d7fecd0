"""The one exception type for bad user input: the CLI prints it and exits with code 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from search_spaces import SpaceError


class UserError(Exception):
    """Input the user can fix (a path, a column, a flag); the message says what and how."""


EXIT_USER_ERROR = 2


@contextmanager
def space_errors() -> Iterator[None]:
    """Turn a bad search space (``search_spaces.SpaceError``) into a ``UserError`` with the same message."""
    try:
        yield
    except SpaceError as exc:
        raise UserError(str(exc)) from None
