"""Fixtures of the Collector tests: one throwaway PostgreSQL for the module (the replicas share it)."""

from __future__ import annotations

import itertools

import pytest

from tests.postgres import PostgresCluster

_names = itertools.count(1)


@pytest.fixture(scope="session")
def collector_pg():
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def module_pg_url(collector_pg) -> str:
    """A new empty PostgreSQL database for one test module."""
    return collector_pg.create_database(f"collector{next(_names)}")


@pytest.fixture
def pg_url(collector_pg) -> str:
    return collector_pg.create_database(f"collector{next(_names)}")
