"""Check that an Optuna storage or MLflow tracking URI can be reached, without writing to it."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from study.core.errors import UserError

def _db_family(url: str) -> str:
    return urlparse(url).scheme.split("+", 1)[0]


def check_driver(url: str, what: str) -> None:
    """Raise UserError if ``url`` is a server database (postgresql, mysql) whose Python driver is not installed
    (psycopg, for PostgreSQL, is the project's ``postgres`` extra); nothing is connected to."""
    if _db_family(url) not in ("postgresql", "mysql"):
        return
    import sqlalchemy

    try:
        dialect = sqlalchemy.engine.make_url(url).get_dialect()
    except Exception as exc:  # an unknown dialect or driver name
        raise UserError(f"{what} {url!r}: {str(exc).splitlines()[0]} (for PostgreSQL: postgresql+psycopg://…)") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        hint = ("install the PostgreSQL driver with the project's postgres extra: pip install -e '.[postgres]' "
                "(psycopg), and write the URL as postgresql+psycopg://…" if _db_family(url) == "postgresql"
                else "install that driver")
        raise UserError(f"{what} {url!r}: its database driver {dialect.driver!r} is not installed ({exc}); "
                        f"{hint}") from None


def check_reachable(url: str, what: str) -> None:
    """Raise UserError if ``url`` (sqlite/postgresql/mysql, or http(s) for MLflow) cannot be used.

    sqlite: the database's folder must exist or be creatable, and be writable (nothing is created).
    Server databases: one connection is opened and closed. http(s): the server's /health answers.
    """
    family = _db_family(url)
    if family == "sqlite":
        if not url.startswith("sqlite:///"):
            raise UserError(f"{what} {url!r}: a sqlite URL looks like sqlite:///relative.db or sqlite:////abs.db")
        path = Path(url[len("sqlite:///"):]).expanduser()
        folder = path.parent if str(path.parent) else Path(".")
        existing = folder
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise UserError(f"{what} {url!r}: folder {folder} cannot be created or written")
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise UserError(f"{what} {url!r}: database file {path} is not readable and writable")
        return
    if family in ("postgresql", "mysql"):
        import sqlalchemy

        check_driver(url, what)
        try:
            engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
            with engine.connect():
                pass
            engine.dispose()
        except Exception as exc:
            raise UserError(f"{what} {url!r} is not reachable: {str(exc).splitlines()[0]}") from None
        return
    if family in ("http", "https") and what.startswith("MLflow"):
        import requests

        try:
            requests.get(url.rstrip("/") + "/health", timeout=5).raise_for_status()
        except Exception as exc:
            raise UserError(f"{what} {url!r} is not reachable: {exc}") from None
        return
    if family == "file" and what.startswith("MLflow"):
        return
    raise UserError(f"{what} {url!r}: unsupported URL scheme {urlparse(url).scheme!r} "
                    f"(expected sqlite:///…, postgresql+psycopg://…" + (", http://…)" if what.startswith("MLflow") else ")"))
