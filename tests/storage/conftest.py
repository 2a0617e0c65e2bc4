import itertools

import pytest

from tests.support import PostgresCluster

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    cluster = PostgresCluster(tmp_path_factory.mktemp("pg")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The same tests on a real SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'otel-ml.db'}"
    return request.getfixturevalue("postgres").create_database(f"t{next(_names)}")
