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
    from sft.config import ModelConfig
    from sft.model import build_model

    path = tmp_path_factory.mktemp("judge") / "model"
    model = build_model(ModelConfig(hidden_size=64, num_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                    intermediate_size=128, max_position_embeddings=1024), tiny_tokenizer)
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_generative_judge_unparseable_output_is_a_per_item_error(judge_dir):
    """An untrained causal LM writes no 0..10 score: each item is UNPARSEABLE with its judge text, never 0; the
    server answers the batch normally."""
    scorer = load_scorer(judge_dir)
    assert scorer.kind == "generative"
    server = RewardServer(scorer, ServerConfig(model_name="judge", port=0)).start()
    try:
        with grpc.insecure_channel(server.address) as ch:
            resp = pbg.RewardServiceStub(ch).Score(pb.ScoreRequest(samples=[
                pb.Sample(id="a", prompt="Say hi.", response="Hello there!", reference="Hi!"),
                pb.Sample(id="b", prompt="Say bye.", response="Goodbye."),
            ]), timeout=60)
        assert [r.id for r in resp.results] == ["a", "b"]
        for r in resp.results:
            if r.error == pb.OK:
                assert 0.0 <= r.reward <= 1.0
            else:
                assert r.error == pb.UNPARSEABLE and r.reward == 0.0 and r.error_message
    finally:
        server.drain(timeout_s=5)


def test_judge_parses_scores_when_the_model_writes_them(judge_dir):
    scorer = load_scorer(judge_dir)

    class Writes7:
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
