"""Test harnesses: run a solution against stdin/stdout, function-call or assert-style tests, inside the sandbox.

    from sandbox.harness import TestSpec, run_tests
    spec = TestSpec.call("add", inputs=[[1, 2]], outputs=[3])
    run_tests(sandbox, "def add(a, b):\\n    return a + b", spec).passed      # True

The test spec and the parser of code ground truth live in :mod:`sandbox.spec` (imported here too).

Never exit-code-only, never ``==`` in this process on objects the code returned:
- **stdio**: one isolated run per test; the parent compares stdout with LiveCodeBench's rules: both sides
  ``strip()``ped, split on "\\n", each line ``strip()``ped (so trailing spaces, ``\\r`` and blank lines at the ends
  do not matter; blank lines inside do), same number of lines; a line passes if equal as strings
  (case-sensitive), or if both lines are whitespace-separated numbers equal as exact decimals
  (``1.0`` == ``1`` == ``1.00``). Float tolerance: none by default (as LiveCodeBench); ``float_abs_tol`` /
  ``float_rel_tol`` on :func:`run_tests` add one for tasks whose checker allows it.
- **call**: one run; a driver (``main.py``) loads the solution as a module, calls ``fn_name`` (or
  ``Solution().fn_name``) per test and prints ``<nonce> [index, kind, json(result)]``; the nonce is random per
  run, read from a file the driver deletes before the solution is loaded. The parent decodes the JSON and compares
  plain data with ``==`` (tuples become lists; ``1 == 1.0`` and ``True == 1`` as in Python and LiveCodeBench).
  Expected outputs never enter the sandbox, so an ``__eq__`` that is always True, a shadowed ``json``/``print``,
  or lines imitating the protocol cannot pass a test.
- **assert**: one run; the driver executes the solution, then the test code, then prints the nonce. Passes only if
  the nonce line appears and the run exits cleanly, so ``os._exit(0)`` or ``sys.exit(0)`` before the asserts fails.
  The test code is rewritten so that every comparison in an ``assert`` goes through a guard that refuses operands
  whose comparison/truth methods were defined by the solution (an always-True ``__eq__`` fails), and tracing
  (``sys.settrace`` to jump over asserts) is blocked by an audit hook installed before the solution runs.

Stop at the first failure (unless ``stop_at_first_failure=False``, which pass-rate rewards use); per-test
deadlines (a wall-clock limit per stdio run; ``setitimer`` per call in the driver) and a total deadline.

Not covered: assert-style tests run in the solution's own process, so a solution that digs through the driver's
memory (``gc``, frames, ``ctypes``) can find the nonce. Function-call and stdio tests are not affected by this,
and the isolation itself (:mod:`sandbox.isolation`) holds in every case.
"""

from __future__ import annotations

import ast
import json
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal, InvalidOperation

from sandbox.isolation import LANGUAGES, OK, SANDBOX_ERROR, ExecutionResult, Limits, Sandbox
from sandbox.spec import ASSERT, CALL, STDIO, TestSpec, spec_from_ground_truth  # noqa: F401 - re-exported

PASSED, FAILED = "passed", "failed"


@dataclass
class TestOutcome:
    __test__ = False  # not a pytest class

    index: int
    passed: bool
    reason: str  # passed | wrong_answer | runtime_error | timeout | memory | output_limit | missing_result | not_run
    detail: str = ""


@dataclass
class TestsResult:
    """The verdict on one solution. ``status`` is passed, failed, or sandbox_error (the sandbox, not the code)."""

    __test__ = False  # not a pytest class

    status: str
    num_passed: int
    num_tests: int
    outcomes: list[TestOutcome] = field(default_factory=list)
    wall_time_s: float = 0.0
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def pass_rate(self) -> float:
        return self.num_passed / self.num_tests if self.num_tests else 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TestsResult":
        d = dict(d)
        d["outcomes"] = [TestOutcome(**o) for o in d.get("outcomes", [])]
        return cls(**d)


# ---- comparison ------------------------------------------------------------------------------------------

def _stripped_lines(s: str) -> list[str]:
    return [line.strip() for line in s.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except InvalidOperation:
        return None


def stdout_matches(actual: str, expected: str, *, float_abs_tol: float = 0.0, float_rel_tol: float = 0.0) -> bool:
    """LiveCodeBench's stdout comparison (case-sensitive), with an optional float tolerance.

    >>> stdout_matches("3 \\n4.0\\n\\n", "3\\n4")
    True
    >>> stdout_matches("Yes", "YES"), stdout_matches("1 2", "1 2 3"), stdout_matches("0.3333", "0.33333")
    (False, False, False)
    >>> stdout_matches("0.3333", "0.33333", float_abs_tol=1e-4)
    True
    """
    a_lines, e_lines = _stripped_lines(actual), _stripped_lines(expected)
    if len(a_lines) != len(e_lines):
        return False
    for a, e in zip(a_lines, e_lines):
        if a == e:
            continue
        da, de = _decimals(a), _decimals(e)
        if da is None or de is None or len(da) != len(de):
            return False
        for x, y in zip(da, de):
            if x == y:
                continue
            if not (float_abs_tol or float_rel_tol) or not (x.is_finite() and y.is_finite()):
                return False
            if abs(float(x) - float(y)) > max(float_abs_tol, float_rel_tol * abs(float(y))):
                return False
    return True


# ---- drivers (run inside the sandbox) ---------------------------------------------------------------------

_CALL_DRIVER = r'''
def _mixrl_main():
    import json, os, signal, sys, traceback
    dumps, write, exit_, setitimer, format_exc = json.dumps, os.write, os._exit, signal.setitimer, traceback.format_exc
    callable_, getattr_, isinstance_, enumerate_, type_, base_exc = callable, getattr, isinstance, enumerate, type, BaseException
    with open("_mixrl_nonce") as f:
        nonce = f.read().strip()
    os.unlink("_mixrl_nonce")
    with open("_mixrl_cases.json") as f:
        cases = json.load(f)
    with open("solution.py") as f:
        source = f.read()
    out_fd = os.dup(1)

    class Deadline(BaseException):
        pass

    def on_alarm(signum, frame):
        raise Deadline()

    def emit(i, kind, payload):
        try:
            line = dumps([i, kind, payload])
        except base_exc:
            line = dumps([i, "unserializable", None])
        write(out_fd, (nonce + " " + line + "\n").encode())

    ns = {"__name__": "solution"}
    signal.signal(signal.SIGALRM, on_alarm)
    setitimer(signal.ITIMER_REAL, cases["per_test_timeout_s"])  # module-level code (a call that never returns) too
    try:
        exec(compile(source, "solution.py", "exec"), ns)
    except Deadline:
        emit(-1, "load_error", "loading the solution ran past the per-test limit of %ss" % cases["per_test_timeout_s"])
        exit_(0)
    except base_exc:
        emit(-1, "load_error", format_exc(limit=4)[-2000:])
        exit_(0)
    finally:
        setitimer(signal.ITIMER_REAL, 0)
    fn = ns.get(cases["fn_name"])
    if fn is None and isinstance_(ns.get("Solution"), type_):
        try:
            fn = getattr_(ns["Solution"](), cases["fn_name"], None)
        except base_exc:
            fn = None
    if not callable_(fn):
        emit(-1, "load_error", "function %r not found" % cases["fn_name"])
        exit_(0)
    for i, args in enumerate_(cases["inputs"]):
        signal.signal(signal.SIGALRM, on_alarm)
        setitimer(signal.ITIMER_REAL, cases["per_test_timeout_s"])
        try:
            result, kind = fn(*args), "ok"
        except Deadline:
            result, kind = None, "timeout"
        except base_exc:
            result, kind = format_exc(limit=4)[-2000:], "error"
        finally:
            setitimer(signal.ITIMER_REAL, 0)
        emit(i, kind, result)
        if kind != "ok" and cases["stop_at_first_failure"]:
            break
    emit(-1, "done", None)
    exit_(0)


_mixrl_main()
'''

_ASSERT_DRIVER = r'''
def _mixrl_main():
    import os, sys, traceback, types
    write, exit_, format_exc = os.write, os._exit, traceback.format_exc
    with open("_mixrl_nonce") as f:
        nonce = f.read().strip()
    os.unlink("_mixrl_nonce")
    with open("tests.py") as f:
        tests = compile(f.read(), "tests.py", "exec", dont_inherit=True, optimize=0)
    os.unlink("tests.py")
    with open("solution.py") as f:
        solution = compile(f.read(), "solution.py", "exec", dont_inherit=True, optimize=0)
    out_fd = os.dup(1)

    def no_tracing(event, args):  # tracing could jump over the asserts
        if event in ("sys.settrace", "sys.setprofile"):
            raise RuntimeError("tracing is disabled in the test harness")
    sys.addaudithook(no_tracing)

    # The guard: comparisons and truth tests in asserts refuse operands whose special methods the solution wrote.
    type_, bool_, all_ = type, bool, all
    stdlib = os.path.dirname(os.__file__) + "/"
    slot = type_(object.__eq__)
    function = types.FunctionType
    plain = {int, float, complex, bool, str, bytes, type(None), type(Ellipsis)}
    containers = {list, tuple, set, frozenset, dict}
    dunders = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__len__", "__contains__",
               "__iter__", "__hash__", "__abs__", "__float__", "__index__", "__int__")

    def trusted_type(t):
        for cls in t.__mro__:
            d = type_.__dict__["__dict__"].__get__(cls)
            for name in dunders:
                if name in d:
                    m = d[name]
                    if m is None or type_(m) is slot:
                        continue
                    if type_(m) is function and m.__code__.co_filename.startswith(stdlib):
                        continue
                    return False
        return True

    def trusted(x, depth=0):
        t = type_(x)
        if t in plain:
            return True
        if depth > 50:
            return False
        if t in containers:
            if t is dict:
                return all_(trusted(k, depth + 1) and trusted(v, depth + 1) for k, v in dict.items(x))
            return all_(trusted(v, depth + 1) for v in x)
        return trusted_type(t)

    import operator
    ops = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
           ">=": operator.ge, "in": lambda a, b: a in b, "not in": lambda a, b: a not in b}

    def compare(a, b, op):
        if not (trusted(a) and trusted(b)):
            return False
        return bool_(ops[op](a, b))

    def truth(x):
        return trusted(x) and bool_(x)

    ns = {"__name__": "solution"}
    try:
        exec(solution, ns)
        ns["__CMP__"], ns["__TRUTH__"] = compare, truth
        exec(tests, ns)
    except BaseException:
        os.write(2, format_exc(limit=6)[-3000:].encode(errors="replace"))
        exit_(1)
    write(out_fd, (nonce + "\n").encode())
    exit_(0)


_mixrl_main()
'''


class _GuardAsserts(ast.NodeTransformer):
    """Rewrite ``assert`` tests: single-operator comparisons -> ``CMP(a, b, op)``, the whole test -> ``TRUTH(...)``."""

    _OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
            ast.In: "in", ast.NotIn: "not in"}

    def __init__(self, cmp_name: str, truth_name: str) -> None:
        self.cmp_name, self.truth_name = cmp_name, truth_name

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        test = _Comparisons(self.cmp_name, self._OPS).visit(node.test)
        node.test = ast.Call(ast.Name(self.truth_name, ast.Load()), [test], [])
        return ast.fix_missing_locations(node)


class _Comparisons(ast.NodeTransformer):
    def __init__(self, cmp_name: str, ops: dict) -> None:
        self.cmp_name, self.ops = cmp_name, ops

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if len(node.ops) != 1 or type(node.ops[0]) not in self.ops:
            return node  # chained comparisons and is/is not stay as written (identity cannot be faked)
        op = self.ops[type(node.ops[0])]
        return ast.Call(ast.Name(self.cmp_name, ast.Load()), [node.left, node.comparators[0], ast.Constant(op)], [])


def guard_asserts(test_code: str, cmp_name: str = "__CMP__", truth_name: str = "__TRUTH__") -> str:
    """Route every comparison and truth test inside ``assert`` statements through the driver's guard.

    >>> guard_asserts("assert f(1) == 2")
    "assert __TRUTH__(__CMP__(f(1), 2, '=='))"
    """
    tree = _GuardAsserts(cmp_name, truth_name).visit(ast.parse(test_code))
    return ast.unparse(tree)


# ---- running ------------------------------------------------------------------------------------------------

def run_tests(sandbox: Sandbox, code: str, spec: TestSpec, *, limits: Limits | None = None,
              per_test_timeout_s: float = 5.0, total_timeout_s: float = 30.0, stop_at_first_failure: bool = True,
              float_abs_tol: float = 0.0, float_rel_tol: float = 0.0) -> TestsResult:
    """Run ``code`` (Python) against ``spec`` in ``sandbox``; see the module docstring for each kind's rules."""
    limits = limits or sandbox.limits
    started = time.monotonic()
    if spec.kind == STDIO:
        result = _run_stdio(sandbox, code, spec, limits, per_test_timeout_s, total_timeout_s, stop_at_first_failure,
                            float_abs_tol, float_rel_tol, started)
    elif spec.kind == CALL:
        result = _run_call(sandbox, code, spec, limits, per_test_timeout_s, total_timeout_s, stop_at_first_failure)
    else:
        result = _run_assert(sandbox, code, spec, limits, total_timeout_s)
    result.wall_time_s = round(time.monotonic() - started, 4)
    return result


def _verdict(outcomes: list[TestOutcome], num_tests: int, message: str = "") -> TestsResult:
    n_pass = sum(o.passed for o in outcomes)
    return TestsResult(PASSED if n_pass == num_tests else FAILED, n_pass, num_tests, outcomes, message=message)


def _sandbox_failure(ex: ExecutionResult, num_tests: int) -> TestsResult:
    return TestsResult(SANDBOX_ERROR, 0, num_tests, [], message=ex.message or ex.stderr[-1000:])


def _run_stdio(sandbox, code, spec, limits, per_test_s, total_s, stop_first, abs_tol, rel_tol, started) -> TestsResult:
    outcomes = []
    for i, (stdin, expected) in enumerate(zip(spec.inputs, spec.outputs)):
        remaining = total_s - (time.monotonic() - started)
        if remaining <= 0:
            outcomes.append(TestOutcome(i, False, "timeout", "total deadline reached before this test"))
            if stop_first:
                break
            continue
        ex = sandbox.run_code(code, stdin=stdin, limits=replace(limits, wall_time_s=min(per_test_s, remaining)))
        if ex.status == SANDBOX_ERROR:
            return _sandbox_failure(ex, spec.num_tests)
        if ex.status != OK:
            outcomes.append(TestOutcome(i, False, ex.status, ex.stderr[-500:]))
        elif stdout_matches(ex.stdout, expected, float_abs_tol=abs_tol, float_rel_tol=rel_tol):
            outcomes.append(TestOutcome(i, True, "passed"))
        else:
            outcomes.append(TestOutcome(i, False, "wrong_answer", f"got {ex.stdout[:200]!r}"))
        if stop_first and not outcomes[-1].passed:
            break
    return _verdict(outcomes, spec.num_tests)


def _run_call(sandbox, code, spec, limits, per_test_s, total_s, stop_first) -> TestsResult:
    nonce = secrets.token_hex(16)
    cases = {"fn_name": spec.fn_name, "inputs": list(spec.inputs), "per_test_timeout_s": per_test_s,
             "stop_at_first_failure": stop_first}
    files = {"main.py": _CALL_DRIVER.encode(), "solution.py": code.encode(), "_mixrl_nonce": nonce.encode(),
             "_mixrl_cases.json": json.dumps(cases).encode()}
    wall = min(total_s, per_test_s * len(spec.inputs) + 2.0)  # +2 s: interpreter start and module load
    ex = sandbox.run_files(files, LANGUAGES["python"], limits=replace(limits, wall_time_s=wall))
    if ex.status == SANDBOX_ERROR:
        return _sandbox_failure(ex, spec.num_tests)
    reported: dict[int, tuple[str, object]] = {}
    load_error = None
    prefix = nonce + " "
    for line in ex.stdout.split("\n"):
        if not line.startswith(prefix):
            continue
        try:
            i, kind, payload = json.loads(line[len(prefix):])
        except (ValueError, TypeError):
            continue
        if i == -1 and kind == "load_error":
            load_error = str(payload)
        elif isinstance(i, int) and i >= 0 and i not in reported:
            reported[i] = (kind, payload)
    outcomes = []
    for i, expected in enumerate(spec.outputs):
        if load_error is not None:
            outcomes.append(TestOutcome(i, False, "runtime_error", load_error[-500:]))
        elif i not in reported:
            reason = ex.status if ex.status != OK else "missing_result"
            outcomes.append(TestOutcome(i, False, reason, ex.stderr[-500:]))
        else:
            kind, payload = reported[i]
            if kind == "ok" and _plain_equal(payload, expected):
                outcomes.append(TestOutcome(i, True, "passed"))
            elif kind == "ok" or kind == "unserializable":
                outcomes.append(TestOutcome(i, False, "wrong_answer", f"got {json.dumps(payload)[:200]}"))
            else:
                outcomes.append(TestOutcome(i, False, "timeout" if kind == "timeout" else "runtime_error",
                                            str(payload)[-500:]))
        if stop_first and not outcomes[-1].passed:
            break
    return _verdict(outcomes, spec.num_tests)


def _plain_equal(actual, expected) -> bool:
    """Both sides are plain JSON data decoded here; tuples in ``expected`` compare as lists."""
    return actual == json.loads(json.dumps(expected))


def _run_assert(sandbox, code, spec, limits, total_s) -> TestsResult:
    nonce = secrets.token_hex(16)
    files = {"main.py": _ASSERT_DRIVER.encode(), "solution.py": code.encode(), "_mixrl_nonce": nonce.encode(),
             "tests.py": guard_asserts(spec.test_code).encode()}
    ex = sandbox.run_files(files, LANGUAGES["python"], limits=replace(limits, wall_time_s=total_s))
    if ex.status == SANDBOX_ERROR:
        return _sandbox_failure(ex, 1)
    if ex.status == OK and nonce in ex.stdout.split("\n"):
        return _verdict([TestOutcome(0, True, "passed")], 1)
    reason = ex.status if ex.status != OK else "missing_result"
    if ex.status == "runtime_error" and "AssertionError" in ex.stderr:
        reason = "wrong_answer"
    return _verdict([TestOutcome(0, False, reason, ex.stderr[-500:])], 1)


@dataclass(frozen=True)
class TestJob:
    """One solution and its tests, with the per-job options of :func:`run_tests` (what crosses the wire)."""

    __test__ = False  # not a pytest class

    code: str
    spec: TestSpec
    per_test_timeout_s: float = 5.0
    total_timeout_s: float = 30.0
    stop_at_first_failure: bool = True
    memory_mb: int | None = None  # None: the executor's default

    def to_dict(self) -> dict:
        return {"code": self.code, "spec": self.spec.to_dict(), "per_test_timeout_s": self.per_test_timeout_s,
                "total_timeout_s": self.total_timeout_s, "stop_at_first_failure": self.stop_at_first_failure,
                "memory_mb": self.memory_mb}

    @classmethod
    def from_dict(cls, d: dict) -> "TestJob":
        if not isinstance(d, dict) or not isinstance(d.get("code"), str) or not isinstance(d.get("spec"), dict):
            raise ValueError("a job needs 'code' (string) and 'spec' (object)")
        known = {"code", "spec", "per_test_timeout_s", "total_timeout_s", "stop_at_first_failure", "memory_mb"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown job field(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(code=d["code"], spec=TestSpec.from_dict(d["spec"]),
                   per_test_timeout_s=float(d.get("per_test_timeout_s", 5.0)),
                   total_timeout_s=float(d.get("total_timeout_s", 30.0)),
                   stop_at_first_failure=bool(d.get("stop_at_first_failure", True)),
                   memory_mb=None if d.get("memory_mb") is None else int(d["memory_mb"]))


def run_job(sandbox: Sandbox, job: TestJob) -> TestsResult:
    limits = sandbox.limits if job.memory_mb is None else replace(sandbox.limits, memory_mb=job.memory_mb)
    return run_tests(sandbox, job.code, job.spec, limits=limits, per_test_timeout_s=job.per_test_timeout_s,
                     total_timeout_s=job.total_timeout_s, stop_at_first_failure=job.stop_at_first_failure)
