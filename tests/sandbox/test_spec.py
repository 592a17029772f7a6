"""The one test-spec type and the one parser of code ground truth (`sandbox.spec`), for every dataset shape."""

import ast
import json
import sys
from pathlib import Path

import pytest

import sandbox.harness
import sandbox.spec
from sandbox.spec import ASSERT, CALL, STDIO, TestSpec, spec_from_ground_truth


def test_spec_from_ground_truth_conventions():
    s = spec_from_ground_truth(json.dumps({"fn_name": "f", "inputs": [[1, 2], "3\n4"], "outputs": [3, 7]}))
    assert s.kind == CALL and s.inputs == ([1, 2], [3, 4])  # LiveCodeBench's JSON-lines argument strings too
    s = spec_from_ground_truth({"inputs": [["1", "2"]], "outputs": ["3"]})
    assert s.kind == STDIO and s.inputs == ("1\n2",)
    assert spec_from_ground_truth("{}", {"test_code": "assert True"}).kind == ASSERT
    for bad in ('{"inputs": [1]}', '{"inputs": [], "outputs": []}', "[]"):
        with pytest.raises(ValueError):
            spec_from_ground_truth(bad)


@pytest.mark.parametrize("ground_truth", ["", "ignored", "{oops", '{"fn_name": "add"}', None,
                                          json.dumps({"fn_name": "add", "inputs": [[9]], "outputs": [9]})])
def test_assert_tests_win_and_the_ground_truth_is_not_read(ground_truth, monkeypatch):
    def no_json(*a, **k):
        raise AssertionError("the ground truth was decoded although extra_info holds the tests")

    monkeypatch.setattr(sandbox.spec.json, "loads", no_json)
    spec = spec_from_ground_truth(ground_truth, {"test_code": "assert add(1, 2) == 3"})
    assert spec == TestSpec(ASSERT, test_code="assert add(1, 2) == 3")


def test_dataset_shapes():
    # APPS-style row: no fn_name -> stdin/stdout, extra keys ignored
    apps = spec_from_ground_truth(json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"], "time_limit": 2}))
    assert apps == TestSpec(STDIO, ("1 2\n",), ("3\n",))
    # empty fn_name is stdio too (APPS rows carry "fn_name": "" or null)
    assert spec_from_ground_truth({"fn_name": None, "inputs": ["x"], "outputs": ["y"]}).kind == STDIO
    # verl/prime function-call cases: one JSON argument per line, outputs as JSON strings
    prime = spec_from_ground_truth(json.dumps({"fn_name": "f", "inputs": ["1\n[2, 3]"], "outputs": ['"ab"']}))
    assert prime == TestSpec(CALL, ([1, [2, 3]],), ("ab",), fn_name="f")
    # our generator's call rows; bytes are JSON too; an empty test_code does not select assert-style
    ours = json.dumps({"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]})
    assert spec_from_ground_truth(ours.encode(), {"test_code": ""}) == TestSpec.call("add", [[1, 2]], [3])


@pytest.mark.parametrize("ground_truth, error, match", [
    ("{oops", ValueError, "not JSON"),
    ("", ValueError, "not JSON"),
    (None, ValueError, "'inputs' and 'outputs'"),
    ("[1, 2]", ValueError, "'inputs' and 'outputs'"),
    ('{"inputs": ["1"]}', ValueError, "'inputs' and 'outputs'"),
    ('{"inputs": [], "outputs": []}', ValueError, "no test cases"),
    ('{"inputs": ["1", "2"], "outputs": ["1"]}', ValueError, "2 inputs but 1 outputs"),
    ('{"fn_name": "f", "inputs": ["not json"], "outputs": ["1"]}', ValueError, "one JSON value per line"),
    ('{"fn_name": "f", "inputs": [1], "outputs": [1]}', ValueError, "argument lists"),
    ('{"inputs": 3, "outputs": 3}', TypeError, None),
])
def test_unreadable_ground_truth_raises_value_or_type_error(ground_truth, error, match):
    with pytest.raises(error, match=match):
        spec_from_ground_truth(ground_truth)


def test_to_dict_round_trip_for_every_kind():
    for spec in (TestSpec.stdio(["1"], ["2"]), TestSpec.call("f", [[1, [2]]], [{"a": 1}]), TestSpec.asserts("assert 1")):
        assert TestSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="unknown test kind"):
        TestSpec.from_dict({"kind": "fuzz"})


def test_one_type_stdlib_only():
    # harness, the package and the reward contract all hand out the same objects
    from rewards.clients import TestSpec as ContractSpec

    assert sandbox.harness.TestSpec is sandbox.TestSpec is ContractSpec is TestSpec
    assert sandbox.harness.spec_from_ground_truth is spec_from_ground_truth
    tree = ast.parse(Path(sandbox.spec.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported
