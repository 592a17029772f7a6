"""Issue 17 reward models: the multi-dimension judge, the judge of free-form answers against the reference, and the
rule-based step critique served by `mixrl serve-rm --kind critique` and reached through the registry.

The judges' parsers are fed real judge text (well-formed, with chatter, partial, malformed, off the scale) through
the server and the client, by a stand-in LM that writes scripted replies token by token; one short call with a real
(untrained) LM checks that whatever it writes is parsed, not crashed on, and masked when unreadable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from reward_services.models import RuleScorer, load_scorer, parse_multidim_judgement, parse_reference_verdict
from reward_services.server import RewardServer, ServerConfig, run_server
from reward_services.types import ErrorCode, ScoreItem

from .conftest import REPO
from .test_models import ScriptedJudge, judge_dir  # noqa: F401 - judge_dir is a fixture

WELL_FORMED = "helpfulness: 8\ncorrectness: 6\nsafety: 10\noverall: 7"


def _serve_and_score(scorer, items):
    from reward_services.client import ClientConfig, RewardServiceClient

    server = RewardServer(scorer, ServerConfig(model_name="judge", port=0)).start()
    try:
        with RewardServiceClient("judge", addresses=[server.address], config=ClientConfig(deadline_s=60)) as client:
            return {r.id: r for r in client.score(items)}
    finally:
        server.drain(timeout_s=5)


def test_multidim_judge_scores_dimensions_and_masks_what_it_cannot_read(judge_dir):  # noqa: F811
    scorer = load_scorer(judge_dir, kind="multidim")
    assert scorer.kind == "multidim" and scorer.dimensions == ("helpfulness", "correctness", "safety")
    replies = {
        "Hello there!": WELL_FORMED,
        "Goodbye.": "Here is my rating.\n- **Helpfulness**: 9/10\n- Correctness: 9\n- Safety: 10\n- Overall: 9\nThanks!",
        "Whatever.": "helpfulness: 8\noverall: 7",                                   # partial
        "Fine, thanks.": "helpfulness: 8, correctness: 6, safety: 10, overall: 7",   # not one per line
        "No.": "helpfulness: 8\ncorrectness: 6\nsafety: 12\noverall: 7",             # off the scale
        "Meh.": "I think this response is pretty good overall.",                     # chatter only
    }
    scorer.model = ScriptedJudge(scorer.tokenizer, replies)
    scorer.max_new_tokens = 400
    items = [ScoreItem(k, prompt="Reply politely.", response=r) for k, r in zip("abcdef", replies)]
    results = _serve_and_score(scorer, items)

    assert results["a"].ok and results["a"].reward == pytest.approx(0.7)
    assert dict(results["a"].head_scores) == pytest.approx({"helpfulness": 0.8, "correctness": 0.6, "safety": 1.0})
    assert results["b"].ok and results["b"].reward == pytest.approx(0.9)  # markdown, "/10" and chatter around
    for k in "cdef":
        assert results[k].reward is None and results[k].error == ErrorCode.UNPARSEABLE, results[k]
        assert results[k].judge_text == replies[items["abcdef".index(k)].response]
    # the judge was told the exact format it must answer in
    assert all("helpfulness: N\ncorrectness: N\nsafety: N\noverall: N" in p for p in scorer.model.prompts)


def test_reference_judge_reads_verdicts_and_refuses_items_without_a_reference(judge_dir):  # noqa: F811
    scorer = load_scorer(judge_dir, kind="reference")
    replies = {"Paris.": " Yes, both say Paris.", "Lyon.": " no", "Paris, France.": " **Correct**",
               "Rome.": "The reference says Paris but the response says Rome, so", "About 8.": " 8/10",
               "Nice.": " yes"}
    scorer.model = ScriptedJudge(scorer.tokenizer, replies)
    scorer.max_new_tokens = 100
    items = [ScoreItem("a", prompt="Capital of France?", response="Paris.", reference="Paris"),
             ScoreItem("b", prompt="Capital of France?", response="Lyon.", reference="Paris"),
             ScoreItem("c", prompt="Capital of France?", response="Paris, France.", reference="Paris"),
             ScoreItem("d", prompt="Capital of France?", response="Rome.", reference="Paris"),
             ScoreItem("e", prompt="How many legs do 2 spiders have?", response="About 8.", reference="16"),
             ScoreItem("f", prompt="Rate this.", response="Nice.")]  # nothing to judge against
    results = _serve_and_score(scorer, items)
    assert [results[k].reward for k in "abce"] == pytest.approx([1.0, 0.0, 1.0, 0.8])
    assert results["d"].error == ErrorCode.UNPARSEABLE and results["d"].reward is None
    assert results["f"].error == ErrorCode.INVALID_INPUT and "reference" in results["f"].error_message
    (prompt_a,) = [p for p in scorer.model.prompts if "Response: Paris.\n" in p]
    assert "Question: Capital of France?\nReference answer: Paris\nResponse: Paris.\nVerdict:" in prompt_a


def test_judges_with_a_real_model_score_exactly_what_it_wrote(judge_dir):  # noqa: F811
    """One short real generation per judge (an untrained LM writes noise): the result is the parser's reading of
    the text it wrote — masked as UNPARSEABLE when unreadable, never a crash and never a made-up 0."""
    item = ScoreItem("a", prompt="Say hi.", response="Hello there!", reference="Hi!")
    for kind, parse in (("multidim", lambda t: (parse_multidim_judgement(t) or {}).get("overall")),
                        ("reference", parse_reference_verdict)):
        scorer = load_scorer(judge_dir, kind=kind)
        scorer.max_new_tokens = 12
        (result,) = scorer.score([item], [scorer.encode(item)])
        assert result.judge_text  # it generated something
        assert result.reward == parse(result.judge_text)
        assert result.error == (ErrorCode.OK if result.reward is not None else ErrorCode.UNPARSEABLE)


def test_rule_kinds_need_the_mixrl_cli(capsys):
    args = SimpleNamespace(kind="critique", model_dir=None, threads=None, model_name="c", host="127.0.0.1", port=0,
                           token=None, max_batch_items=8, max_batch_tokens=1000, max_queue_items=10, batch_wait_ms=1,
                           max_message_bytes=1 << 20, metrics_port=None, tls_certfile=None, tls_keyfile=None,
                           batch_invariant=False)
    assert run_server(args) == 2
    assert "mixrl serve-rm --kind critique" in capsys.readouterr().err
    with pytest.raises(ValueError, match="rule-based"):
        load_scorer("unused", kind="critique")


def test_rule_digest_names_the_rule():
    fn = lambda p, r, ref: (1.0, {}, "")  # noqa: E731
    assert RuleScorer("critique", fn, b"v1").digest == RuleScorer("critique", fn, b"v1").digest
    assert RuleScorer("critique", fn, b"v1").digest != RuleScorer("critique", fn, b"v2").digest


def test_critique_served_by_mixrl_serve_rm_through_the_registry(tmp_path):
    """`mixrl serve-rm --kind critique` in its own process registers in a local registry; the router's client
    resolves it by name and gets the fraction of correct steps per trace (None for a trace without steps)."""
    from reward_services.client import RewardModelServiceClient
    from rewards.clients import RewardModelRequest

    registry, ready = tmp_path / "registry", tmp_path / "ready.json"
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mixrl.cli", "serve-rm", "--kind", "critique", "--model-name",
                             "math-critique", "--port", "0", "--registry", f"local:{registry}", "--threads", "1",
                             "--ready-file", str(ready)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        end = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < end, (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        assert json.loads(ready.read_text())["kind"] == "critique"
        client = RewardModelServiceClient.from_registry(f"local:{registry}")
        try:
            traces = ["3 + 4 = 7\n7 * 2 = 14", "3 + 4 = 8\n8 * 2 = 16", "12 × 3 = 36 = 30 + 5", "no arithmetic"]
            scores = client.score([RewardModelRequest("math-critique", "q", t) for t in traces])
            assert scores == [1.0, 0.5, 0.5, None]
            (detail,) = client.client("math-critique").score([ScoreItem("x", prompt="q", response=traces[1])])
            assert detail.judge_text == "first wrong step (line 1): 3 + 4 = 8; expected 7"
            assert dict(detail.head_scores) == {"steps": 2.0, "correct_steps": 1.0}
        finally:
            client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
