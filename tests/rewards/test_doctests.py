"""The doctests of every rewards module run as part of the test suite (testpaths is tests/)."""

import doctest
import importlib
import pkgutil

import pytest

import rewards

MODULES = sorted(m.name for m in pkgutil.iter_modules(rewards.__path__, "rewards."))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name, pool):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


def test_modules_have_doctests():
    # A module listed here without examples would make the parametrized test above vacuous.
    without = [n for n in MODULES if doctest.testmod(importlib.import_module(n), optionflags=doctest.ELLIPSIS).attempted == 0]
    assert set(without) <= {"rewards.clients"}, without  # clients.py holds interfaces only
