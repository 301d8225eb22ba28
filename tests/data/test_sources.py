"""Packaged corpora load offline into non-empty, well-formed examples."""

from __future__ import annotations

import os

import pytest

from openpfi.data import chatterbot, chitchat, shakespeare
from openpfi.data.sources import SOURCES, load_examples
from openpfi.errors import UserError


def _well_formed(result_examples: list, files: list[str]) -> None:
    assert result_examples
    assert all(e.prompt and e.response and e.group for e in result_examples)
    assert all(
        e.prompt == e.prompt.strip() and e.response == e.response.strip()
        for e in result_examples
    )
    assert files and all(os.path.isabs(f) and os.path.isfile(f) for f in files)


def test_chitchat_loads_senders_as_groups() -> None:
    result = load_examples("chitchat")
    _well_formed(result.examples, result.source_files)
    assert result.source_files[0].endswith("chitchat_dataset/dataset.json")
    assert len(result.examples) > 100_000
    assert len({e.group for e in result.examples}) > 1000
    assert 30 <= len({e.label for e in result.examples}) <= 40  # conversation topics


def test_chitchat_conversation_merges_bursts_and_drops_empty_turns() -> None:
    # Prepare
    record = {
        "prompt": " Favourite food? ",
        "messages": [
            [{"sender": "a", "text": "Hi"}, {"sender": "a", "text": " there "}],
            [{"sender": "b", "text": "   "}],
            [{"sender": "b", "text": "Hello"}],
            [{"sender": "b", "text": "pizza?"}],
            [{"sender": "a", "text": "Yes"}],
        ],
    }
    # Execute
    examples = chitchat.conversation_examples(record)
    # Assert
    assert [(e.prompt, e.response, e.group, e.label) for e in examples] == [
        ("Hi there", "Hello pizza?", "b", "Favourite food?"),
        ("Hello pizza?", "Yes", "a", "Favourite food?"),
    ]
    assert chitchat.conversation_examples({"messages": []}) == []


def test_chitchat_opening_turns_answer_the_topic_question() -> None:
    # Prepare
    record = {"prompt": "Favourite food?", "messages": [[{"sender": "a", "text": "Hi"}], [{"sender": "b", "text": "Yo"}]]}
    untopical = {"messages": [[{"sender": "c", "text": "Hey"}]]}
    # Execute
    opened = chitchat.conversation_examples(record, opening_turns=True)
    alone = chitchat.conversation_examples(untopical, opening_turns=True)
    # Assert
    assert [(e.prompt, e.response, e.group) for e in opened] == [("Favourite food?", "Hi", "a"), ("Hi", "Yo", "b")]
    assert [(e.prompt, e.response, e.group, e.label) for e in alone] == [
        (chitchat.OPENING_PROMPT, "Hey", "c", chitchat.NO_TOPIC)
    ]
    assert chitchat.conversation_examples(untopical) == []


def test_chitchat_opening_turns_give_every_sender_examples() -> None:
    # 1,315 distinct senders in the file; 202 of them only ever open conversations.
    replies = {e.group for e in load_examples("chitchat").examples}
    every = {e.group for e in load_examples("chitchat", opening_turns=True).examples}
    assert (len(replies), len(every)) == (1113, 1315)
    with pytest.raises(UserError, match="opening_turns applies to source 'chitchat' only"):
        load_examples("shakespeare", opening_turns=True)


def test_shakespeare_loads_play_character_groups() -> None:
    result = load_examples("shakespeare")
    _well_formed(result.examples, result.source_files)
    assert len(result.source_files) == 37  # 42 modern texts minus 5 poems
    assert len({e.label for e in result.examples}) == 37
    assert len({e.group for e in result.examples}) > 1000
    assert all(e.group.startswith(e.label + "::") for e in result.examples)
    hamlet = [e for e in result.examples if e.label == "hamlet"]
    assert (hamlet[0].prompt, hamlet[0].response, hamlet[0].group) == (
        "Who's there?",
        "Nay, answer me: stand, and unfold yourself.",
        "hamlet::FRAN",
    )
    dream = {e.group for e in result.examples if e.label == "midsummer_nights_dream"}
    assert {"midsummer_nights_dream::THESEUS", "midsummer_nights_dream::PUCK"} <= dream


def test_shakespeare_load_is_deterministic() -> None:
    assert shakespeare.load.__wrapped__() == shakespeare.load()


def test_parse_play_tags_directions_and_scenes() -> None:
    # Prepare: period tags, a bare upper-case tag, a stage direction inside a speech,
    # text before the first act, and a second scene.
    text = (
        "PERSONS.\n\nHam.\nnot in a scene\n\n"
        "ACT I.\n\nSCENE I. A room.\n\n[Enter both.]\n\n"
        "Ham.\nTo be,\nor not. [Aside.]\n\n"
        "THESEUS\nGo.\n\n[Exit HAMLET.]\n\nStill Theseus.\n\n"
        "SCENE II.\n\nII.\nA song\n\nHam.\nAgain.\n"
    )
    # Execute
    scenes = shakespeare.parse_play(text)
    # Assert
    assert scenes == [
        [("HAM", "To be,\nor not."), ("THESEUS", "Go.\nStill Theseus.")],
        [("HAM", "Again.")],
    ]


def test_chatterbot_loads_languages_and_topics() -> None:
    result = load_examples("chatterbot")
    _well_formed(result.examples, result.source_files)
    languages = {e.group for e in result.examples}
    assert len(languages) > 20
    assert {"english", "german", "japanese"} <= languages
    english = {e.label for e in result.examples if e.group == "english"}
    assert {"greetings", "ai", "food"} <= english
    assert ("What is AI?", "english", "ai") in {
        (e.prompt, e.group, e.label) for e in result.examples
    }


def test_chatterbot_language_filter() -> None:
    result = load_examples("chatterbot", languages=["german", "french"])
    assert {e.group for e in result.examples} == {"german", "french"}
    assert all("/german/" in f or "/french/" in f for f in result.source_files)
    with pytest.raises(UserError, match="no language 'klingon'.*english"):
        chatterbot.load(("klingon",))


def test_unknown_source_lists_valid_ones() -> None:
    with pytest.raises(
        UserError,
        match="unknown data source 'reddit'; choose one of: " + ", ".join(SOURCES),
    ):
        load_examples("reddit")


def test_languages_only_for_chatterbot() -> None:
    with pytest.raises(UserError, match="chatterbot"):
        load_examples("shakespeare", languages=["english"])
