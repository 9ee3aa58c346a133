"""Fixtures for the training tests: data caches under a temporary root, runs in tmp_path."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One cache root for the session: a task's splits are generated once."""
    return tmp_path_factory.mktemp("seqzoo_train_data")


@pytest.fixture(autouse=True)
def _no_default_cache(monkeypatch, data_root):
    monkeypatch.setenv("SEQZOO_DATA", str(data_root))
