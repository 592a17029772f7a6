"""The shipped base checkpoint: verified by hash before use, refused when altered or when the requested data is
not the data it was trained on, small enough for git, and loadable as the quickstart's starting policy."""

import json
import shutil

import pytest

from mixrl.base_checkpoint import SHIPPED_BASE, BaseCheckpointError, data_mismatch, main, pack, verify


def test_shipped_checkpoint_matches_its_manifest_and_fits_in_git():
    manifest = verify()
    assert manifest["bytes"] <= 40 * 2**20
    assert {"config.json", "model.safetensors"} <= set(manifest["sha256"])
    assert "make base-checkpoint" in manifest["command"] or "from_scratch=true" in manifest["command"]
    for stage in ("pretrain", "sft"):  # built by step count in a fixed precision: the same model on every machine
        train = manifest["recipe"][stage]["train"]
        assert train["max_minutes"] == 0 and train["dtype"] == "float32", stage
    assert manifest["summaries"]["pretrain"]["steps"] == manifest["recipe"]["pretrain"]["train"]["max_steps"]


def test_an_altered_file_is_refused_by_name(tmp_path):
    copy = tmp_path / "base"
    shutil.copytree(SHIPPED_BASE, copy)
    verify(copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BaseCheckpointError, match="model.safetensors: SHA-256"):
        verify(copy)
    weights.write_text("version https://git-lfs.github.com/spec/v1\n")  # what a clone without LFS would hold
    with pytest.raises(BaseCheckpointError, match="Git LFS pointer"):
        verify(copy)
    (copy / "config.json").unlink()
    with pytest.raises(BaseCheckpointError, match="config.json: missing"):
        verify(copy)


def test_data_other_than_the_checkpoint_saw_is_named():
    from core.config import build
    from mixrl.config import QuickstartConfig

    manifest = verify()
    same = build(QuickstartConfig, {}, source="test").pretrain.data
    assert data_mismatch(manifest, same) == []
    other = build(QuickstartConfig, {"pretrain": {"data": {"seed": 7}}}, source="test").pretrain.data
    assert any(d.startswith("seed: shipped") for d in data_mismatch(manifest, other))


def test_a_changed_generator_is_named():
    """Same data config, other generator code: the manifest's fingerprint of each generator catches it (a changed
    split would put prompts the checkpoint trained on into the held-out sets)."""
    from core.config import build
    from mixrl.config import QuickstartConfig

    manifest = verify()
    data = build(QuickstartConfig, {}, source="test").pretrain.data
    assert set(manifest["generators"]) >= {"math", "code", "ifeval", "chat"}
    manifest["generators"]["code"] = "0" * 16
    assert data_mismatch(manifest, data) == [
        "generators: code now write other rows than the checkpoint was trained on (rebuild it with "
        "`make base-checkpoint`)"]


def test_quickstart_refuses_other_data_before_any_work(tmp_path):
    from core.config import build
    from mixrl.config import QuickstartConfig
    from mixrl.quickstart import run_quickstart

    cfg = build(QuickstartConfig, {"run_root": str(tmp_path / "qs"), "pretrain": {"data": {"train_rows": {"math": 10}}}}, source="test")
    with pytest.raises(BaseCheckpointError, match="train_rows: shipped .*from_scratch=true"):
        run_quickstart(cfg)
    assert not (tmp_path / "qs").exists()  # refused before data generation or any model work


def test_pack_refuses_a_time_boxed_build(tmp_path):
    import yaml

    run = tmp_path / "run"
    shutil.copytree(SHIPPED_BASE, run / "sft" / "final")
    recipe = verify()["recipe"]
    recipe["pretrain"]["train"]["max_minutes"] = 3.5
    (run / "config.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(BaseCheckpointError, match="max_minutes=3.5"):
        pack(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pack_round_trips_through_verify(tmp_path, capsys):
    import yaml

    run = tmp_path / "run"
    manifest = verify()
    shutil.copytree(SHIPPED_BASE, run / "sft" / "final")
    (run / "sft" / "final" / "manifest.json").unlink()
    (run / "config.yaml").write_text(yaml.safe_dump(manifest["recipe"]))
    for stage in ("pretrain", "sft"):
        (run / stage / "summary.json").parent.mkdir(parents=True, exist_ok=True)
        (run / stage / "summary.json").write_text(json.dumps(manifest["summaries"][stage]))
    packed = pack(run, tmp_path / "out")
    assert packed["sha256"] == manifest["sha256"]
    verify(tmp_path / "out")
    assert main(["verify"]) == 0
    assert json.loads(capsys.readouterr().out)["sha256"] == manifest["sha256"]


def test_shipped_base_loads_and_answers_in_its_chat_format():
    from core.model import load_checkpoint

    model, tokenizer = load_checkpoint(SHIPPED_BASE)
    assert sum(p.numel() for p in model.parameters()) == verify()["summaries"]["pretrain"]["parameters"]
    assert "<think>" in tokenizer.get_vocab() and tokenizer.chat_template
