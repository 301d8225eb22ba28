"""Retrieval-augmented local training (rag.train): each training example carries its client's own
passages, in the one prompt format that evaluation and chat use; never itself; same seed, same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from openpfi.assembly.clients import load_clients, prepare
from openpfi.client.retrieval_eval import ClientRetrieval, RetrievalSettings, encode_with_passages
from openpfi.config import load_config
from openpfi.data.documents import Document, training_documents
from openpfi.data.types import Example
from openpfi.models.chat import build_messages, prompt_ids
from openpfi.models.loader import load_tokenizer

NOTES = [
    Document("pets.txt", "My dog Bruno is a four year old beagle who loves long walks in the park."),
    Document("car.md", "The car is a blue 2015 Toyota Corolla; its next service is due in March."),
    Document("work.txt", "I work as a nurse at the Riverside hospital, mostly on night shifts."),
]
SETTINGS = RetrievalSettings(top_k=1, token_budget=96, chunk_tokens=128, chunk_overlap=32, max_length=64,
                             eval_batch_size=4, evaluate=False, train=True)
TINY = ["model.name=tiny-random", "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=1",
        "client.local_steps=1", "client.batch_size=2", "client.max_length=48", "client.max_eval_examples=3",
        "monitor.enabled=false", "rag.train=true", "rag.top_k=2"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-random")


def test_a_training_example_carries_the_passage_that_answers_it_in_the_chat_prompt_format(tok) -> None:
    # Prepare
    ask = Example("When is the car's next service?", "In March.", "me")
    retrieval = ClientRetrieval(NOTES, SETTINGS, train=[ask])
    # Execute
    [encoded] = retrieval.training_set(tok, None)
    # Assert: the prompt is the one chat --rag sends (same passage, same format), then the response
    chat = prompt_ids(tok, build_messages([], ask.prompt, context=[NOTES[1].text]), 10_000)[0].tolist()
    assert list(encoded.input_ids[: len(chat)]) == chat
    assert NOTES[1].text in tok.decode(encoded.input_ids) and NOTES[0].text not in tok.decode(encoded.input_ids)
    targets = [t for t, lab in zip(encoded.input_ids, encoded.labels, strict=True) if lab != -100]
    assert tok.decode(targets).startswith("In March.")
    # the held-out evaluation encodes a question with its passages the same way
    found = retrieval.retrieve(ask.prompt, tok, None)[0]
    assert encode_with_passages(tok, ask, found, SETTINGS) == encoded


def test_an_example_never_gets_itself_as_a_passage(tok) -> None:
    # Prepare: the client's training texts are its documents, as with rag.documents = ""
    train = [Example("Where do I work?", "At the Riverside hospital.", "me"),
             Example("Where do I work at night?", "At the Riverside hospital, on night shifts.", "me"),
             Example("What is my dog called?", "Bruno.", "me")]
    retrieval = ClientRetrieval(training_documents(train), SETTINGS, train=train)
    # Execute
    texts = [tok.decode(e.input_ids) for e in retrieval.training_set(tok, None)]
    # Assert: each example's one passage is another example (the closest one), never its own text
    for e, text in zip(train, texts, strict=True):
        head = text.split("[1] ", 1)[1].split("<|im_end|>")[0]
        assert e.text() not in head and any(o.text() in head for o in train if o is not e)
    assert "Where do I work at night?" in texts[0].split("<|im_end|>")[1]


def test_refreshed_documents_give_new_passages(tok) -> None:
    ask = Example("What breed is my dog?", "A beagle.", "me")
    retrieval = ClientRetrieval(NOTES[1:], SETTINGS, train=[ask])
    first = tok.decode(retrieval.training_set(tok, None)[0].input_ids)
    retrieval.use_documents(NOTES)
    assert "beagle" not in first.split("What breed")[0] and "beagle" in tok.decode(
        retrieval.training_set(tok, None)[0].input_ids).split("What breed")[0]


def test_passages_are_retrieved_once_and_the_encodings_dropped_by_release(tok, monkeypatch) -> None:
    # Prepare
    retrieval = ClientRetrieval(NOTES, SETTINGS, train=[Example("What breed is my dog?", "A beagle.", "me")])
    first = list(retrieval.training_set(tok, None))
    # Execute
    retrieval.release()
    held = retrieval.training_set(tok, None).encoded
    monkeypatch.setattr(retrieval, "retrieve", lambda *a, **k: pytest.fail("retrieved again"))
    again = list(retrieval.training_set(tok, None))
    # Assert
    assert held == 0 and again == first and "beagle" in tok.decode(first[0].input_ids).split("What breed")[0]


def _docs(root: Path, ids: list[str]) -> Path:
    for c in ids:
        (root / c).mkdir(parents=True)
        (root / c / "note.txt").write_text(f"The parking code of {c} is 4417.")
    return root


def _fit(sets: list[str]):
    prep = prepare(load_config(None, sets))
    client = prep.clients[0]
    update = client.fit(prep.shared, prep.start_adapter, 1, 0)
    return prep, client, update


def test_a_client_trains_on_its_examples_with_passages_and_the_same_seed_gives_the_same_update(tmp_path: Path) -> None:
    # Prepare
    ids = [c.client_id for c in load_clients(load_config(None, TINY))[1]]
    sets = [*TINY, f"rag.documents={json.dumps(str(_docs(tmp_path / 'docs', ids)))}"]
    # Execute
    prep, client, update = _fit(sets)
    _, _, again = _fit(sets)
    _, _, plain = _fit([*sets, "rag.train=false"])
    # Assert
    tok = prep.shared.loaded.tokenizer
    trained_on = client.retrieval.training_set(tok, None)
    assert all(f"The parking code of {ids[0]} is 4417." in tok.decode(e.input_ids) for e in trained_on)
    assert len(trained_on) == len(client.train) and update.num_examples == len(client.train)
    assert update.scalars["tokens"] > plain.scalars["tokens"]  # the passages were in the batches
    assert (update.scalars["train_loss"], update.scalars["tokens"]) == (again.scalars["train_loss"], again.scalars["tokens"])
    assert all(torch.equal(update.delta[k], again.delta[k]) for k in update.delta)


@pytest.mark.parametrize("key", ["rag.train", "rag.evaluate"])
def test_retrieval_with_an_alignment_method_is_refused_in_one_line(tmp_path: Path, key: str) -> None:
    from typer.testing import CliRunner

    from openpfi.cli import app

    (tmp_path / "c.toml").write_text("")
    res = CliRunner().invoke(app, ["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"), "--quiet",
                                   "--set", "model.name=tiny-random", "--set", 'alignment.method="dpo"',
                                   "--set", f"{key}=true"], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert [line for line in res.output.splitlines() if line.strip()] == [
        f'error: {key} needs a retrieval store, which alignment.method = "dpo" does not keep (it trains on preference '
        f'pairs); remove {key} or set alignment.method = "none"']
    assert not (tmp_path / "run").exists()
