"""The doctests of the sandbox modules run with the suite."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["sandbox.seccomp", "sandbox.spec", "sandbox.harness"])
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
