"""Store URLs are checked before anything is written: a PostgreSQL URL without its driver is a clear UserError."""

from __future__ import annotations

import sys

import pytest

from study.core.errors import UserError
from study.reporting.front import pair_studies
from study.reporting.stores import check_reachable


@pytest.fixture()
def no_psycopg(monkeypatch):
    """As on an install without the postgres extra: ``import psycopg`` fails."""
    monkeypatch.setitem(sys.modules, "psycopg", None)


def test_a_postgresql_url_without_psycopg_names_the_postgres_extra(no_psycopg):
    with pytest.raises(UserError) as caught:
        check_reachable("postgresql+psycopg://user@127.0.0.1:1/study", "Optuna storage")
    message = str(caught.value)
    assert message.startswith("Optuna storage 'postgresql+psycopg://user@127.0.0.1:1/study'")
    assert "driver 'psycopg' is not installed" in message and "pip install -e '.[postgres]'" in message


def test_reading_a_study_from_postgresql_without_psycopg_is_the_same_error(no_psycopg):
    with pytest.raises(UserError, match=r"driver 'psycopg' is not installed.*\[postgres\]"):
        pair_studies("postgresql+psycopg://user@127.0.0.1:1/study", "s")


def test_an_unknown_driver_is_refused_by_name():
    with pytest.raises(UserError, match=r"postgresql\.nodriver.*postgresql\+psycopg://"):
        check_reachable("postgresql+nodriver://user@127.0.0.1:1/study", "MLflow tracking URI")
