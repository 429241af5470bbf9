import sys

import pytest


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory):
    """One cache folder per test session, so the embedded dataset is built at most once."""
    return tmp_path_factory.mktemp("recbole_milk_cache")


@pytest.fixture(autouse=True)
def isolated_run(tmp_path, monkeypatch, embedded_cache):
    """Every test runs in its own folder, with no pytest options leaking into RecBole's command-line parser."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.setenv("RECBOLE_MILK_CACHE", str(embedded_cache))


@pytest.fixture
def built_count(monkeypatch):
    """How many NewItemDatasets were built from the files (not loaded from the cache)."""
    from recbole_milk.data.dataset import NewItemDataset

    calls = []
    original = NewItemDataset.__init__

    def counting(self, config):
        calls.append(config)
        original(self, config)

    monkeypatch.setattr(NewItemDataset, "__init__", counting)
    return calls
