"""The tests of one code problem: the `TestSpec` type and the one parser of code ground truth, `spec_from_ground_truth`.

Shared by the sandbox harness (which runs a `TestSpec`) and the reward side (``rewards.clients.CodeExecutionClient``
takes one; the reward router and ``rewards.code`` build it with `spec_from_ground_truth`). Standard library only,
and no other ``sandbox`` module, so importing the type pulls in nothing that runs code.

    >>> spec = spec_from_ground_truth('{"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}')
    >>> spec
    TestSpec(kind='call', inputs=([1, 2],), outputs=(3,), fn_name='add', test_code=None)
    >>> TestSpec.from_dict(spec.to_dict()) == spec
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass

STDIO, CALL, ASSERT = "stdio", "call", "assert"


@dataclass(frozen=True)
class TestSpec:
    """What to test. ``inputs``/``outputs`` for stdio (strings) and call (argument lists / return values).

    kind: ``stdio`` (``inputs[i]`` is the stdin text, ``outputs[i]`` the expected stdout), ``call`` (``fn_name`` is
        called with the arguments ``inputs[i]``, its result compared with ``outputs[i]``) or ``assert``
        (``test_code`` runs after the solution; one test). Build one with `stdio` / `call` / `asserts`, which
        normalize the cases; the constructor validates.

    >>> TestSpec.stdio([["1", "2"]], ["3"]).inputs                 # a list of lines is joined
    ('1\\n2',)
    >>> TestSpec.call("f", ["1\\n[2]"], [3]).inputs                # LiveCodeBench: one JSON argument per line
    ([1, [2]],)
    >>> TestSpec.asserts("assert f(1) == 2").num_tests
    1
    >>> TestSpec.call("f", [[1]], [])
    Traceback (most recent call last):
    ...
    ValueError: 1 inputs but 0 outputs
    """

    __test__ = False  # not a pytest class

    kind: str
    inputs: tuple = ()
    outputs: tuple = ()
    fn_name: str | None = None
    test_code: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in (STDIO, CALL, ASSERT):
            raise ValueError(f"unknown test kind {self.kind!r}; valid: {STDIO}, {CALL}, {ASSERT}")
        if self.kind == ASSERT and not self.test_code:
            raise ValueError("assert tests need test_code")
        if self.kind in (STDIO, CALL) and len(self.inputs) != len(self.outputs):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.outputs)} outputs")
        if self.kind in (STDIO, CALL) and not self.inputs:
            raise ValueError("no test cases")
        if self.kind == CALL and not self.fn_name:
            raise ValueError("call tests need fn_name")

    @classmethod
    def stdio(cls, inputs, outputs) -> "TestSpec":
        join = lambda x: "\n".join(map(str, x)) if isinstance(x, list) else str(x)  # noqa: E731
        return cls(STDIO, tuple(join(i) for i in inputs), tuple(join(o) for o in outputs))

    @classmethod
    def call(cls, fn_name: str, inputs, outputs) -> "TestSpec":
        return cls(CALL, tuple(_call_args(i) for i in inputs), tuple(outputs), fn_name=fn_name)

    @classmethod
    def asserts(cls, test_code: str) -> "TestSpec":
        return cls(ASSERT, test_code=test_code)

    @property
    def num_tests(self) -> int:
        return 1 if self.kind == ASSERT else len(self.inputs)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "fn_name": self.fn_name, "test_code": self.test_code}

    @classmethod
    def from_dict(cls, d: dict) -> "TestSpec":
        kind = d.get("kind")
        if kind == STDIO:
            return cls.stdio(d["inputs"], d["outputs"])
        if kind == CALL:
            return cls.call(d["fn_name"], d["inputs"], d["outputs"])
        if kind == ASSERT:
            return cls.asserts(d["test_code"])
        raise ValueError(f"unknown test kind {kind!r}; valid: {STDIO}, {CALL}, {ASSERT}")


def _call_args(x) -> list:
    """A call's arguments: a list, or LiveCodeBench's string of one JSON value per line."""
    if isinstance(x, str):
        return [json.loads(line) for line in x.split("\n") if line.strip()]
    if isinstance(x, (list, tuple)):
        return list(x)
    raise ValueError(f"call inputs must be argument lists or JSON-lines strings, got {type(x).__name__}")


def spec_from_ground_truth(ground_truth, extra_info: dict | None = None) -> TestSpec:
    """The dataset convention: ``extra_info["test_code"]`` (assert-style) wins, and then ``ground_truth`` is not
    read at all (it may be empty or not JSON); else ``ground_truth`` is JSON (or the decoded dict)
    ``{"fn_name", "inputs", "outputs"}`` (call) or ``{"inputs", "outputs"}`` without ``fn_name`` (stdio: APPS,
    verl/prime). Unreadable tests raise ValueError or TypeError: callers mask the sample, never score it 0.

    >>> spec_from_ground_truth('{"inputs": ["1 2\\\\n"], "outputs": ["3\\\\n"]}').kind
    'stdio'
    >>> spec_from_ground_truth('{"fn_name": "f", "inputs": [[1]], "outputs": [2]}').fn_name
    'f'
    >>> spec_from_ground_truth("", {"test_code": "assert add(1, 2) == 3"}).kind
    'assert'
    >>> spec_from_ground_truth("add(1, 2) == 3")
    Traceback (most recent call last):
    ...
    ValueError: ground_truth is not JSON (Expecting value: line 1 column 1 (char 0))
    """
    if extra_info and extra_info.get("test_code"):
        return TestSpec.asserts(extra_info["test_code"])
    if isinstance(ground_truth, (str, bytes)):
        try:
            gt = json.loads(ground_truth)
        except json.JSONDecodeError as exc:
            raise ValueError(f"ground_truth is not JSON ({exc})") from None
    else:
        gt = ground_truth
    if not isinstance(gt, dict) or "inputs" not in gt or "outputs" not in gt:
        raise ValueError("ground_truth must hold 'inputs' and 'outputs' (or extra_info must hold 'test_code')")
    if gt.get("fn_name"):
        inputs, outputs = gt["inputs"], gt["outputs"]
        if inputs and all(isinstance(i, str) for i in inputs):
            inputs, outputs = _decode_prime_call_cases(inputs, outputs)
        return TestSpec.call(gt["fn_name"], inputs, outputs)
    return TestSpec.stdio(gt["inputs"], gt["outputs"])


def _decode_prime_call_cases(inputs: list[str], outputs: list) -> tuple[list[list], list]:
    """verl/prime function-call cases: each input is one JSON argument per line, each output a JSON string.

    >>> _decode_prime_call_cases(['1\\n[2, 3]'], ['"ab"'])
    ([[1, [2, 3]]], ['ab'])
    """
    try:
        args = [[json.loads(line) for line in text.split("\n") if line.strip()] for text in inputs]
        expected = [json.loads(o) if isinstance(o, str) else o for o in outputs]
    except json.JSONDecodeError as exc:
        raise ValueError(f"function-call test cases with string inputs must hold one JSON value per line: {exc}") from None
    return args, expected
