"""Completion formats render the layouts their authors published; StopTrimmer cuts at stop strings."""

from __future__ import annotations

import pytest

from chatbot.formats import FORMATS, StopTrimmer, merge_system, trim_stream

MESSAGES = [
    {"role": "system", "content": "SYS"},
    {"role": "user", "content": "EXAMPLE Q"},
    {"role": "assistant", "content": "EXAMPLE A"},
    {"role": "user", "content": "Q"},
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("medalpaca", "<s>SYS\n\nContext: EXAMPLE Q\n\nAnswer: EXAMPLE A\n\nContext: Q\n\nAnswer: "),
        (
            "alpaca",
            "<s>Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\nSYS\n\n"
            "### Input:\nEXAMPLE Q\n\n### Response:\nEXAMPLE A\n\n### Input:\nQ\n\n### Response:\n",
        ),
        ("chatdoctor", "<s>SYS\n\nPatient: EXAMPLE Q\n\nChatDoctor: EXAMPLE A\n\nPatient: Q\n\nChatDoctor: "),
        (
            "meditron",
            "<s><|im_start|> system\nSYS<|im_end|>\n<|im_start|> user\nEXAMPLE Q<|im_end|>\n"
            "<|im_start|> assistant\nEXAMPLE A<|im_end|>\n<|im_start|> user\nQ<|im_end|>\n<|im_start|> assistant\n",
        ),
    ],
)
def test_completion_formats_render_the_published_layout(name: str, expected: str) -> None:
    assert FORMATS[name].render(MESSAGES, bos="<s>") == expected


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_stops_before_a_new_user_turn(name: str) -> None:
    fmt = FORMATS[name]
    next_turn = fmt.user.format(content="")
    assert fmt.stop and any(stop.strip() in next_turn for stop in fmt.stop)
    assert fmt.source


def test_merge_system_folds_the_system_prompt_into_the_first_user_turn() -> None:
    merged = merge_system(MESSAGES)
    assert [m["role"] for m in merged] == ["user", "assistant", "user"]
    assert merged[0]["content"] == "SYS\n\nEXAMPLE Q"
    assert MESSAGES[0] == {"role": "system", "content": "SYS"}  # the input is not modified
    assert merge_system([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]
    assert merge_system(MESSAGES[1:]) == MESSAGES[1:]


@pytest.mark.parametrize(
    ("pieces", "shown"),
    [
        (["Hello", " world", "\n### Inst", "ruction: more"], "Hello world\n"),
        (["Answer [1].", "###", " Input"], "Answer [1]."),
        (["no stop here ", "#", "# not a stop"], "no stop here ## not a stop"),
        (["#", "##"], ""),
    ],
)
def test_trim_stream_cuts_at_the_first_stop_string(pieces: list[str], shown: str) -> None:
    assert "".join(trim_stream(pieces, ["### Instruction:", "### Input:", "###"])) == shown


def test_text_that_may_begin_a_stop_string_is_held_back_until_it_cannot() -> None:
    trimmer = StopTrimmer(["<|im_end|>"])
    assert trimmer.feed("Yes [1]. <|im") == "Yes [1]. "
    assert trimmer.feed("_en") == ""
    assert trimmer.feed("x") == "<|im_enx"
    assert trimmer.feed("<|im_end|>tail") == ""
    assert trimmer.stopped and trimmer.feed("more") == "" and trimmer.flush() == ""


def test_trim_stream_stops_reading_the_producer_at_the_stop() -> None:
    read: list[str] = []

    def producer():
        for piece in ["a", "b", "STOP", "c", "d"]:
            read.append(piece)
            yield piece

    assert list(trim_stream(producer(), ["STOP"])) == ["a", "b"]
    assert read == ["a", "b", "STOP"]


def test_no_stop_strings_pass_everything_through() -> None:
    assert list(trim_stream(["a", "b"], [])) == ["a", "b"]
