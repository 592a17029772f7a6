"""SFT data rendering: fused modes, multi-turn switching, epochs and key-data resampling; eval summaries."""

import random

import pytest

from core.chat import THINK_SWITCH, wants_thinking
from sft.config import SFTSource
from mixrl.data.math_problems import generate_math
from mixrl.evaluate import opens_thinking, summarise
from sft.finetune import render_row, source_chats


@pytest.fixture(scope="module")
def rows():
    return generate_math(20, "train", 0)


def test_fused_row_gives_thinking_and_direct_forms(rows):
    row = rows[0]
    think, direct = render_row(row, "fused")
    assert think[0]["content"].endswith(" " + THINK_SWITCH) and wants_thinking(think)
    assert think[1]["content"].startswith("<think>\n" + row["extra_info"]["reasoning"] + "\n</think>\n\n")
    assert think[1]["content"].endswith(row["extra_info"]["response"])
    assert THINK_SWITCH not in direct[0]["content"] and not wants_thinking(direct)
    assert direct[1]["content"] == row["extra_info"]["response"]


def test_multiturn_second_turn_decides_alone(rows):
    for flip in (True, False):
        (chat,) = render_row(rows[0], "multiturn", partner=rows[1], flip=flip)
        assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant"]
        assert wants_thinking(chat[:3]) is flip
        assert (THINK_SWITCH in chat[0]["content"]) is (not flip)  # first turn in the opposite mode
        assert opens_thinking(chat[3]["content"]) is flip and opens_thinking(chat[1]["content"]) is (not flip)


@pytest.mark.parametrize("epochs,weight,expected", [(3, 1.0, 60), (1, 2.5, 50), (2, 0.5, 20), (0.5, 1.0, 10)])
def test_epochs_times_resample_weight(rows, epochs, weight, expected):
    source = SFTSource(name="m", path="unused", mode="direct", epochs=epochs, resample_weight=weight)
    chats = source_chats(source, rows, random.Random(0))
    assert len(chats) == expected
    fused = SFTSource(name="m", path="unused", mode="fused", epochs=epochs, resample_weight=weight, max_rows=10)
    assert len(source_chats(fused, rows, random.Random(0))) == expected  # half the rows, two forms each


def test_summarise_accuracy_and_switch():
    items = [
        {"domain": "math", "kind": "single", "think": True, "score": 1.0, "response": "<think>\nx\n</think>\n\nA"},
        {"domain": "math", "kind": "single", "think": True, "score": 0.0, "response": "A"},  # switch missed
        {"domain": "math", "kind": "single", "think": False, "score": 1.0, "response": "A"},
        {"domain": "math", "kind": "single", "think": False, "score": None, "response": "A"},  # unscored: not a 0
        {"domain": "multiturn", "kind": "multiturn", "think": False, "score": None, "response": "<think>"},  # missed
    ]
    out = summarise(items)
    assert out["accuracy"] == {"math": {"think": 0.5, "direct": 1.0}}
    assert out["unscored"] == {"math/direct": 1}
    assert out["switch_reliability"]["single"] == 0.75
    assert out["switch_reliability"]["multiturn"] == 0.0
    assert out["switch_reliability"]["overall"] == 0.6


def test_rows_without_answers_are_refused_naming_file_and_row(rows):
    from core.data import DataError
    from sft.finetune import check_sft_rows

    bad = [dict(r) for r in rows[:3]]
    bad[2] = {**bad[2], "extra_info": {"response": "x"}}
    check_sft_rows(bad, "f.parquet", "direct")  # direct mode needs no reasoning
    with pytest.raises(DataError, match=r"f.parquet: row 2: SFT mode 'fused' needs extra_info.reasoning"):
        check_sft_rows(bad, "f.parquet", "fused")
    with pytest.raises(DataError, match="no rows"):
        check_sft_rows([], "f.parquet", "fused")
