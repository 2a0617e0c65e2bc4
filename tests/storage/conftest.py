"""Fixtures of the storage tests: one throwaway PostgreSQL per session, a fresh database per test.

``db_url`` is parametrized, so every test that takes it runs on a real SQLite file and on a
real PostgreSQL 15 (psycopg 3) alike.
"""

from __future__ import annotations

import itertools

import pytest

from tests.postgres import PostgresCluster

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A new empty PostgreSQL database (SQLAlchemy URL with psycopg 3)."""
    return pg_cluster.create_database(f"t{next(_names)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'otel-ml.db'}"
    return request.getfixturevalue("pg_url")
