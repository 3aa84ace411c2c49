"""The producer modules' docstring examples run (``producers`` is not in pytest's testpaths)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "producers.config",
    "producers.encode",
    "producers.fleet",
    "producers.incidents",
    "producers.topology",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
