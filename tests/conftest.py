"""Fixtures for every test: the Shapeset cache lives in a per-session temporary folder."""

import pytest

from experiments.data import datasets as data


@pytest.fixture(autouse=True, scope="session")
def _private_dataset_cache(tmp_path_factory):
    """Points the dataset cache (and so subprocesses' too) away from the user's home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(data.CACHE_ENV, str(tmp_path_factory.mktemp("keras-inits-cache")))
        yield
