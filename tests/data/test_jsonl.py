"""JSONL loading: strict errors name the line; lenient loading counts skipped rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openpfi.data.jsonl import DEFAULT_GROUP
from openpfi.data.sources import load_examples
from openpfi.errors import UserError

GOOD = {"client": "alice", "prompt": "Hi", "response": "Hello!", "topic": "t"}


def _write(tmp_path: Path, lines: list[str | bytes]) -> str:
    path = tmp_path / "data.jsonl"
    path.write_bytes(
        b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n"
    )
    return str(path)


def test_loads_rows_in_order(tmp_path: Path) -> None:
    rows = [
        {**GOOD, "topic": 1},
        {"client": 7, "prompt": " Q ", "response": "A ", "topic": "t"},
    ]
    path = _write(
        tmp_path, [json.dumps(r) for r in rows[:1]] + ["", "  "] + [json.dumps(rows[1])]
    )
    result = load_examples("jsonl", path=path, label_field="topic", strict=False)
    assert [(e.prompt, e.response, e.group) for e in result.examples] == [
        ("Hi", "Hello!", "alice"),
        ("Q", "A", "7"),
    ]
    assert [e.label for e in result.examples] == ["1", "t"]
    assert result.skipped_rows == 0
    assert result.source_files == [str(Path(path).resolve())]


def test_custom_field_names_and_no_client_field(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps({"q": "a?", "a": "b."})])
    result = load_examples(
        "jsonl", path=path, prompt_field="q", response_field="a", client_field=""
    )
    assert [(e.prompt, e.response, e.group) for e in result.examples] == [
        ("a?", "b.", DEFAULT_GROUP)
    ]


BAD_ROWS = [
    ('{"client": "a", "prompt": "Hi", ', "invalid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"client": "a", "response": "x"}', "field 'prompt' (data.prompt_field) is missing"),
    ('{"client": "a", "prompt": "  ", "response": "x"}', "field 'prompt' is empty"),
    (
        '{"client": "a", "prompt": "x", "response": 3}',
        "field 'response' must be a string",
    ),
    (
        '{"client": true, "prompt": "x", "response": "y"}',
        "field 'client' must be a string or an integer",
    ),
    ('{"prompt": "x", "response": "y"}', "field 'client' (data.client_field) is missing"),
    ('{"client": "a", "text": "x"}', "the row has neither 'prompt' and 'response' (data.prompt_field, data.response_field) or 'messages'"),
    ('{"client": "a", "messages": [{"role": "user", "content": "x"}]}', "field 'messages' needs a user turn followed by an assistant"),
    ('{"client": "a", "messages": [{"role": "bot", "content": "x"}]}', "messages[0] has role 'bot'"),
    ('{"client": "a", "messages": "hi"}', "field 'messages' must be a non-empty list"),
    (
        '{"client": "a", "prompt": "x", "response": "y", "topic": null}',
        "field 'topic' must be",
    ),
    (b'{"client": "a", "prompt": "\xff", "response": "y"}', "not valid UTF-8"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_ROWS)
def test_strict_names_file_and_line(
    tmp_path: Path, bad: str | bytes, reason: str
) -> None:
    path = _write(tmp_path, [json.dumps(GOOD), "", bad, bad])
    with pytest.raises(UserError) as info:
        load_examples("jsonl", path=path, label_field="topic")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{Path(path).resolve()}, line 3: {reason}")
    assert "data.strict = false" in message


def test_lenient_skips_and_counts(tmp_path: Path) -> None:
    good = json.dumps(GOOD)
    path = _write(tmp_path, [good] + [bad for bad, _ in BAD_ROWS] + [good])
    result = load_examples("jsonl", path=path, label_field="topic", strict=False)
    assert len(result.examples) == 2
    assert result.skipped_rows == len(BAD_ROWS)


def test_lenient_with_no_usable_row_fails(tmp_path: Path) -> None:
    path = _write(tmp_path, ["not json", "{}"])
    with pytest.raises(UserError, match=r"no usable rows \(2 corrupt\)"):
        load_examples("jsonl", path=path, strict=False)


def test_missing_file_and_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(UserError, match=f"data file not found: {missing}"):
        load_examples("jsonl", path=str(missing))
    with pytest.raises(UserError, match="needs a path"):
        load_examples("jsonl")


MULTI = {"client": "bob", "messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "See you"}, {"role": "user", "content": "unanswered"}]}


def test_messages_rows_load_as_multi_turn_beside_single_turn_rows(tmp_path: Path) -> None:
    # Prepare
    path = _write(tmp_path, [json.dumps(MULTI), json.dumps(GOOD)])
    # Execute
    result = load_examples("jsonl", path=path)
    # Assert
    multi, single = result.examples
    assert (multi.group, multi.prompt, multi.response) == ("bob", "Bye", "See you")
    assert multi.turns == (("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"),
                           ("user", "Bye"), ("assistant", "See you"))  # the unanswered turn carries no loss
    assert single.turns == () and single.messages()[1] == {"role": "assistant", "content": "Hello!"}


def test_a_messages_file_is_not_told_that_prompt_is_missing(tmp_path: Path) -> None:
    rows = [{"client": "c", "conversation": MULTI["messages"]}]
    path = _write(tmp_path, [json.dumps(r) for r in rows])
    assert len(load_examples("jsonl", path=path, messages_field="conversation").examples) == 1
    with pytest.raises(UserError) as info:
        load_examples("jsonl", path=path)
    message = str(info.value)
    assert "data.messages_field" in message and "data.strict = false" in message
    assert "field 'prompt' is missing" not in message


def test_hf_datasets_folder_is_read_with_its_client_column(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    # Prepare
    ds = datasets.Dataset.from_list([
        {"user": "acme", "prompt": "Q1", "response": "A1"},
        {"user": "globex", "prompt": "Q2", "response": "A2"},
    ])
    ds.save_to_disk(str(tmp_path / "ds"))
    msgs = datasets.Dataset.from_list([{"client": "x", "messages": MULTI["messages"][:3]}])
    datasets.DatasetDict({"train": msgs, "test": msgs}).save_to_disk(str(tmp_path / "dd"))
    # Execute
    result = load_examples("hf", path=str(tmp_path / "ds"), client_field="user")
    multi = load_examples("hf", path=str(tmp_path / "dd"), split="train")
    # Assert
    assert [(e.group, e.prompt, e.response) for e in result.examples] == [("acme", "Q1", "A1"), ("globex", "Q2", "A2")]
    assert result.source_files and all(Path(f).is_file() for f in result.source_files)
    assert multi.examples[0].turns[-1] == ("assistant", "Hello")
    with pytest.raises(UserError, match=r"holds the splits \['test', 'train'\]; choose one with data.split"):
        load_examples("hf", path=str(tmp_path / "dd"))
    with pytest.raises(UserError, match="is not a Hugging Face datasets folder"):
        load_examples("hf", path=str(tmp_path))
