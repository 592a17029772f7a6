"""Verification inside a Ray actor (methods run off the main thread there; math-verify's alarms would fail)."""

import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_local():
    if ray.is_initialized():  # another folder's session Ray (tests run in another order): use it, leave it up
        yield
        return
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@ray.remote(num_cpus=0)
class Scorer:
    def __init__(self):
        from rewards.verify import VerifierPool

        self.pool = VerifierPool(num_workers=1, timeout_s=2.0)

    def verdicts(self, pairs):
        return [self.pool.verify(g, p).correct for g, p in pairs]

    def threaded_compute_score(self):
        # Like verl: compute_score from an executor thread inside the actor, through the default pool.
        from concurrent.futures import ThreadPoolExecutor

        from rewards import compute_score

        with ThreadPoolExecutor(2) as ex:
            return list(ex.map(lambda s: compute_score("lighteval/MATH", s, "x+1")["acc"], ["\\boxed{1+x}", "\\boxed{x}"]))


def test_verification_inside_a_ray_actor(ray_local):
    actor = Scorer.remote()
    pairs = [("x^2+2x+1", "(x+1)^2"), (r"\pi", "3.14"), ("[1,2)", "[1,2)"), (r"\frac{1}{2^{99}}", r"\frac{1}{2^{98}}")]
    assert ray.get(actor.verdicts.remote(pairs), timeout=120) == [True, False, True, False]
    assert ray.get(actor.threaded_compute_score.remote(), timeout=120) == [1.0, 0.0]
