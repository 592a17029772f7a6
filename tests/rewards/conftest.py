"""Shared fixtures: one verifier pool for the whole rewards test session (2 cores are shared; start workers once)."""

import pytest

import rewards.verify as verify_module
from rewards.verify import VerifierPool


@pytest.fixture(scope="session")
def pool():
    """A 2-worker pool with a short deadline, also installed as the process default (used by compute_score)."""
    p = VerifierPool(num_workers=2, timeout_s=2.0, kill_grace_s=1.0)
    previous = verify_module._default_pool
    verify_module._default_pool = p
    yield p
    verify_module._default_pool = previous
    p.close()
