import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import MiB, make_random_file, sha256_file, start_server  # noqa: E402


@pytest.fixture
def server():
    srv = start_server()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def random_file(tmp_path_factory):
    """A 24 MiB random file and its SHA-256."""
    path = str(tmp_path_factory.mktemp("data") / "random-24MiB.bin")
    make_random_file(path, 24)
    return path, 24 * MiB, sha256_file(path)
