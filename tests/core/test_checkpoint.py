"""The checkpoint layout and resume vocabulary every stage shares (core/checkpoint.py)."""

import pytest

from core.checkpoint import find_resume_checkpoint, latest_checkpoint, list_checkpoints, save_checkpoint


def _write(text):
    return lambda folder: (folder / "state.txt").write_text(text)


def test_save_keeps_the_newest_and_resume_finds_them(tmp_path):
    run = tmp_path / "run"
    for step in (2, 4, 10):
        save_checkpoint(run, step, _write(str(step)), keep=2)
    assert [p.name for p in list_checkpoints(run)] == ["step_4", "step_10"]  # numeric order, oldest dropped
    assert latest_checkpoint(run).name == "step_10"
    assert find_resume_checkpoint("", run) is None
    assert find_resume_checkpoint("auto", run) == run / "checkpoints" / "step_10"
    assert find_resume_checkpoint("auto", tmp_path / "fresh") is None  # auto on a new run starts fresh
    assert find_resume_checkpoint(str(run), tmp_path / "other") == run / "checkpoints" / "step_10"
    assert find_resume_checkpoint(str(run / "checkpoints" / "step_4"), tmp_path / "other").name == "step_4"
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        find_resume_checkpoint(str(tmp_path / "typo"), run)  # an explicit path never silently starts fresh


def test_a_checkpoint_killed_mid_write_is_never_picked(tmp_path):
    save_checkpoint(tmp_path, 3, _write("3"), keep=2)

    def dies(folder):
        (folder / "state.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 6, dies, keep=2)
    assert latest_checkpoint(tmp_path).name == "step_3"
    assert (latest_checkpoint(tmp_path) / "state.txt").read_text() == "3"
