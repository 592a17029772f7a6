"""Protocol code generation, scorers (classifier and generative judge), and the batcher's caps — in-process."""

from __future__ import annotations

import doctest
import subprocess
import sys

import grpc
import pytest

import reward_services.models
from reward_services.models import load_scorer, model_digest
from reward_services.proto import reward_service_pb2 as pb
from reward_services.proto import reward_service_pb2_grpc as pbg
from reward_services.server import RewardServer, ServerConfig
from reward_services.types import ErrorCode, ScoreItem

from .conftest import REPO


def test_generated_protocol_modules_are_current():
    out = subprocess.run([sys.executable, "-m", "reward_services.proto.generate", "--check"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_error_codes_match_the_proto():
    for code in ErrorCode:
        if code != ErrorCode.UNAVAILABLE:  # client-side only
            assert pb.ErrorCode.Value(code.name) == code.value


def test_doctests():
    assert doctest.testmod(reward_services.models).failed == 0


def test_digest_changes_with_weights(rm_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(rm_dir, copy)
    assert model_digest(copy) == model_digest(rm_dir)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert model_digest(copy) != model_digest(rm_dir)


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory, tiny_tokenizer):
    from core.sections import ModelConfig
    from core.model import build_model

    path = tmp_path_factory.mktemp("judge") / "model"
    model = build_model(ModelConfig(hidden_size=64, num_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                    intermediate_size=128, max_position_embeddings=1024), tiny_tokenizer)
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


class ScriptedJudge:
    """Stands in for the judge's causal LM: for each row it reads the judging prompt (the unpadded tokens) and
    "writes" the reply scripted for the response in it, so the test knows every item's judge output."""

    def __init__(self, tokenizer, replies: dict[str, str]) -> None:
        import torch

        self.tokenizer, self.replies = tokenizer, replies
        self.prompts: list[str] = []
        self.device = torch.device("cpu")  # where a model's inputs go

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, **kw):
        import torch

        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = self.tokenizer.decode([t for t, m in zip(ids, mask) if m])
            self.prompts.append(prompt)
            (reply,) = [r for response, r in self.replies.items() if f"Response: {response}\n" in prompt]
            new = self.tokenizer.encode(reply, add_special_tokens=False)
            assert len(new) <= max_new_tokens, (reply, len(new))
            rows.append(new + [pad_token_id] * (max_new_tokens - len(new)))
        return torch.cat([input_ids, torch.tensor(rows, dtype=input_ids.dtype)], dim=1)


def test_generative_judge_scores_each_item_from_its_own_output(judge_dir):
    """Through the server and the client: each item's reward is its own judge output's 0..10 number scaled to
    [0, 1] (a written 0 is a real 0.0); output without an on-scale number is UNPARSEABLE with reward None, never 0,
    and does not fail the other items of the batch. The reference reaches the judging prompt when given."""
    from reward_services.client import ClientConfig, RewardServiceClient

    scorer = load_scorer(judge_dir)
    assert scorer.kind == "generative"
    replies = {"Hello there!": " 9 - friendly", "Goodbye.": "great answer", "Whatever.": "42",
               "Fine, thanks.": " 3.5", "No.": " 0", "Perfect answer.": "10/10", "Meh.": "-1"}
    scorer.model = ScriptedJudge(scorer.tokenizer, replies)
    scorer.max_new_tokens = 16
    items = [ScoreItem("a", prompt="Say hi.", response="Hello there!", reference="Hi!"),
             ScoreItem("b", prompt="Say bye.", response="Goodbye."),
             ScoreItem("c", prompt="Anything?", response="Whatever."),
             ScoreItem("d", prompt="How are you doing today, my friend?", response="Fine, thanks."),
             ScoreItem("e", prompt="Is it?", response="No."),
             ScoreItem("f", prompt="Answer.", response="Perfect answer."),
             ScoreItem("g", prompt="Rate.", response="Meh.")]
    server = RewardServer(scorer, ServerConfig(model_name="judge", port=0)).start()
    try:
        with RewardServiceClient("judge", addresses=[server.address], config=ClientConfig(deadline_s=60)) as client:
            results = {r.id: r for r in client.score(items)}
    finally:
        server.drain(timeout_s=5)

    assert [results[k].error for k in "abcdefg"] == [
        ErrorCode.OK, ErrorCode.UNPARSEABLE, ErrorCode.UNPARSEABLE, ErrorCode.OK, ErrorCode.OK, ErrorCode.OK,
        ErrorCode.UNPARSEABLE]
    assert results["a"].reward == pytest.approx(0.9) and results["a"].judge_text == " 9 - friendly"
    assert results["d"].reward == pytest.approx(0.35)
    assert results["e"].reward == 0.0 and results["e"].ok  # the judge wrote 0: a score, not an error
    assert results["f"].reward == pytest.approx(1.0)
    for k, text in (("b", "great answer"), ("c", "42"), ("g", "-1")):  # no number; above 10; below 0
        assert results[k].reward is None and results[k].error_message and results[k].judge_text == text
    # the judge read the reference of the item that has one, and no "Reference:" line otherwise
    (prompt_a,) = [p for p in scorer.model.prompts if "Response: Hello there!" in p]
    (prompt_b,) = [p for p in scorer.model.prompts if "Response: Goodbye." in p]
    assert "Request: Say hi.\nResponse: Hello there!\nReference: Hi!\nScore:" in prompt_a
    assert "Reference:" not in prompt_b and prompt_b.endswith("Response: Goodbye.\nScore:")


def test_generative_judge_with_a_real_model_scores_what_it_wrote(judge_dir):
    """With real greedy generation (an untrained LM): items of different lengths batched together (left padding)
    get the output each gets alone, and each result is exactly `parse_judge_score` of its judge text."""
    from reward_services.models import parse_judge_score

    scorer = load_scorer(judge_dir)
    items = [ScoreItem("a", prompt="Say hi.", response="Hello there!", reference="Hi!"),
             ScoreItem("b", prompt="Tell me something long about the weather today, please.", response="Sunny.")]
    batched = scorer.score(items, [scorer.encode(it) for it in items])
    alone = [scorer.score([it], [scorer.encode(it)])[0] for it in items]
    assert [r.judge_text for r in batched] == [r.judge_text for r in alone]
    assert all(r.judge_text for r in batched)  # it generated something
    for r in batched:
        value = parse_judge_score(r.judge_text)
        assert r.reward == value and r.error == (ErrorCode.OK if value is not None else ErrorCode.UNPARSEABLE)


def test_judge_parses_scores_when_the_model_writes_them(judge_dir):
    scorer = load_scorer(judge_dir)

    class Writes7:
        device = scorer.model.device

        def generate(self, input_ids, **kw):
            import torch

            seven = scorer.tokenizer.encode(" 7 / 10", add_special_tokens=False)
            return torch.cat([input_ids, torch.tensor([seven] * input_ids.shape[0])], dim=1)

    scorer.model = Writes7()
    item = ScoreItem("x", prompt="q", response="r")
    (result,) = scorer.score([item], [scorer.encode(item)])
    assert result.ok and result.reward == pytest.approx(0.7) and "7" in result.judge_text


def test_batches_respect_item_and_token_caps(rm_dir):
    scorer = load_scorer(rm_dir)
    seen: list[tuple[int, int]] = []
    score = scorer.score

    def recording(items, encoded):
        seen.append((len(items), sum(map(len, encoded))))
        return score(items, encoded)

    scorer.score = recording
    cfg = ServerConfig(port=0, max_batch_items=4, max_batch_tokens=200, batch_wait_s=0.05)
    server = RewardServer(scorer, cfg).start()
    try:
        with grpc.insecure_channel(server.address) as ch:
            resp = pbg.RewardServiceStub(ch).Score(pb.ScoreRequest(samples=[
                pb.Sample(id=str(k), prompt="q", response="a fine answer " * (1 + k % 5)) for k in range(13)]),
                timeout=60)
        assert all(r.error == pb.OK for r in resp.results)
        assert sum(n for n, _ in seen) == 13 and max(n for n, _ in seen) <= 4
        assert all(tokens <= 200 or n == 1 for n, tokens in seen)
        assert max(n for n, _ in seen) > 1  # it did batch
    finally:
        server.drain(timeout_s=5)


def _scores_through_server(rm_dir, batch_invariant: bool, groups: list[list[int]]) -> dict[str, float]:
    """Each group of item indices sent as one request to a fresh server (batched as the group); id -> reward."""
    scorer = load_scorer(rm_dir)
    server = RewardServer(scorer, ServerConfig(port=0, max_batch_items=32, batch_wait_s=0.05,
                                               batch_invariant=batch_invariant)).start()
    rewards = {}
    try:
        with grpc.insecure_channel(server.address) as ch:
            for group in groups:
                resp = pbg.RewardServiceStub(ch).Score(pb.ScoreRequest(samples=[
                    pb.Sample(id=str(k), prompt=f"question {k}", response="a fine answer " * (1 + k % 7) + f"{k}")
                    for k in group]), timeout=60)
                rewards.update({r.id: r.reward for r in resp.results if r.error == pb.OK})
    finally:
        server.drain(timeout_s=5)
    return rewards


def test_batch_invariant_scores_do_not_depend_on_the_batch(rm_dir):
    """A reward is a function of its item alone, whichever items the server batched it with: exactly equal, bit for
    bit, scored among 24 items of other lengths and scored alone (batched scores differ at rounding level)."""
    together = _scores_through_server(rm_dir, True, [list(range(24))])
    alone = _scores_through_server(rm_dir, True, [[k] for k in range(24)])
    assert len(together) == len(alone) == 24
    assert together == alone
