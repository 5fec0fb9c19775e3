"""Fixtures for the plugin tests, which run under every Keras backend."""

import pytest

import keras_inits  # noqa: F401  (registers the names)
from tests.plugin.util import SHAPES


@pytest.fixture(params=sorted(SHAPES), ids=sorted(SHAPES))
def shape(request):
    return SHAPES[request.param]
