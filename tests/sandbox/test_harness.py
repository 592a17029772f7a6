"""Harnesses: LiveCodeBench stdout rules, function calls through the nonce protocol, assert-style tests."""

import json

import pytest

from sandbox.harness import TestJob, TestSpec, TestsResult, guard_asserts, run_tests, stdout_matches


@pytest.mark.parametrize("actual, expected, same", [
    ("3\n", "3", True),
    ("  3  \r\n\n", "3", True),               # whitespace at line ends and trailing blank lines
    ("1 2\n3\n", "1 2\n3", True),
    ("1  2", "1 2", True),                    # numbers: token-wise decimals
    ("1.0 2.50", "1 2.5", True),              # exact decimals: 1.0 == 1
    ("a  b", "a b", False),                   # strings: inner whitespace counts (as in LiveCodeBench)
    ("1\n\n2", "1\n2", False),                # inner blank line counts
    ("Yes", "YES", False),                    # case-sensitive
    ("0.333", "0.3333", False),               # no float tolerance by default
    ("1\n2", "1\n2\n3", False),               # a prefix is not enough
    ("nan", "nan", True), ("nan", "NaN", False),
])
def test_stdout_rules(actual, expected, same):
    assert stdout_matches(actual, expected) is same


def test_float_tolerance_is_opt_in():
    assert stdout_matches("0.3333", "0.33333", float_rel_tol=1e-3)
    assert not stdout_matches("0.4", "0.33333", float_rel_tol=1e-3)


def test_round_trips():
    job = TestJob("x=1", TestSpec.call("f", [[1]], [(1, 2)]), 2.0, 9.0, False, 64)
    assert TestJob.from_dict(json.loads(json.dumps(job.to_dict()))).to_dict() == json.loads(json.dumps(job.to_dict()))
    with pytest.raises(ValueError, match="unknown job field"):
        TestJob.from_dict({**job.to_dict(), "extra": 1})
    tr = TestsResult("failed", 1, 2)
    assert TestsResult.from_dict(tr.to_dict()) == tr


def test_guard_rewrites_only_asserts():
    out = guard_asserts("x = f(1) == 2\nassert f(1) == 2, 'msg'\nassert not f(2) in [1]\nassert f(3) is None")
    assert out.splitlines()[0] == "x = f(1) == 2"
    assert "__TRUTH__(__CMP__(f(1), 2, '=='))" in out
    assert "__CMP__(f(2), [1], 'in')" in out and "f(3) is None" in out


def test_stdio_stops_at_first_failure_unless_asked(sb, no_leaks):
    code = "n = int(input())\nprint(n * 2 if n != 2 else 0)"
    spec = TestSpec.stdio(["1", "2", "3"], ["2", "4", "6"])
    r = run_tests(sb, code, spec)
    assert (r.status, r.num_passed, [o.reason for o in r.outcomes]) == ("failed", 1, ["passed", "wrong_answer"])
    r = run_tests(sb, code, spec, stop_at_first_failure=False)
    assert (r.num_passed, len(r.outcomes), r.pass_rate) == (2, 3, 2 / 3)


def test_call_harness_passes_and_compares_in_the_parent(sb, no_leaks):
    code = "class Solution:\n    def pair(self, a, b):\n        return (a, b)\n"
    assert run_tests(sb, code, TestSpec.call("pair", [[1, "x"]], [[1, "x"]])).passed   # tuples compare as lists
    assert not run_tests(sb, code, TestSpec.call("pair", [[1, "x"]], [[1, "y"]])).passed
    r = run_tests(sb, "def f(x):\n    return {1, 2}\n", TestSpec.call("f", [[1]], [[1, 2]]))
    assert r.outcomes[0].reason == "wrong_answer"  # a set is not JSON: not silently converted
    r = run_tests(sb, "def g(x):\n    return x\n", TestSpec.call("f", [[1]], [1]))
    assert r.outcomes[0].reason == "runtime_error" and "not found" in r.outcomes[0].detail


def test_call_per_test_deadline(sb, no_leaks):
    code = "import time\ndef f(x):\n    if x == 2:\n        time.sleep(5)\n    return x\n"
    r = run_tests(sb, code, TestSpec.call("f", [[1], [2], [3]], [1, 2, 3]), per_test_timeout_s=0.3,
                  stop_at_first_failure=False)
    assert [o.reason for o in r.outcomes] == ["passed", "timeout", "passed"] and r.wall_time_s < 2


def test_total_deadline(sb, no_leaks):
    code = "import time\ntime.sleep(0.4)\nprint(1)"
    r = run_tests(sb, code, TestSpec.stdio(["", "", "", ""], ["1"] * 4), total_timeout_s=0.7,
                  stop_at_first_failure=False)
    assert r.status == "failed" and r.outcomes[-1].reason == "timeout" and r.wall_time_s < 1.5


def test_assert_harness(sb, no_leaks):
    tests = "def check(candidate):\n    assert candidate(2) == 4\n    assert abs(candidate(0.5) - 1.0) < 1e-9\n" \
            "    assert candidate(3) != 5\ncheck(double)\n"
    assert run_tests(sb, "def double(x):\n    return 2 * x\n", TestSpec.asserts(tests)).passed
    r = run_tests(sb, "def double(x):\n    return x + 2\n", TestSpec.asserts(tests))
    assert r.outcomes[0].reason == "wrong_answer"
    # a solution with a __main__ demo reading stdin still passes: it is imported as a module
    demo = "def double(x):\n    return 2 * x\nif __name__ == '__main__':\n    print(double(int(input())))\n"
    assert run_tests(sb, demo, TestSpec.asserts(tests)).passed
