"""A run with rag.train and rag.evaluate: each client's index, its training examples with their passages
and its figures stay with the client, out of the server's reach."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openpfi.assembly.clients import load_clients, prepare
from openpfi.assembly.run_start import attach_client_stores, new_run
from openpfi.assembly.server import make_server, server_start
from openpfi.client.retrieval import Chunk, Passage, RetrievalIndex
from openpfi.client.retrieval_eval import ClientRetrieval, exact_match, normalize_answer
from openpfi.config import load_config
from openpfi.data.documents import Document
from openpfi.data.tokenize import Encoded
from openpfi.engines.inprocess import InProcessEngine
from openpfi.errors import UserError

SECRET = "zanzibarquokka"
TINY = ["model.name=tiny-random", "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=1",
        "client.local_steps=1", "client.batch_size=2", "client.max_length=48", "client.max_eval_examples=3",
        "monitor.enabled=false", "personalization.method=ditto", "rag.train=true", "rag.evaluate=true",
        "rag.exact_match=true", "rag.max_new_tokens=4"]


def _docs(root: Path, clients: list[str]) -> Path:
    for c in clients:
        (root / c).mkdir(parents=True)
        (root / c / "note.txt").write_text(f"The {SECRET} code of {c} is 4417.")
    return root


def test_run_keeps_index_and_figures_client_side_and_the_server_reaches_neither(tmp_path: Path, object_walk) -> None:
    # Prepare
    probe = load_config(None, TINY)
    ids = [c.client_id for c in load_clients(probe)[1]]
    docs = _docs(tmp_path / "docs", ids)
    cfg = load_config(None, [*TINY, f"rag.documents={json.dumps(str(docs))}"])
    prep = prepare(cfg)
    cfg, run = new_run(cfg, tmp_path / "run", False, prep.shared.loaded.info, prep.loaded_data, prep.data,
                       start=prep.start_adapter, layout=prep.shared.layout)
    attach_client_stores(prep.clients, run)
    server = make_server(cfg, prep.personal)
    server.init(server_start(prep))
    engine = InProcessEngine(prep.shared, prep.clients, server, run, cfg.federation.rounds, cfg.seed)
    # Execute
    engine.run_rounds(1)
    # Assert: the figures and the index are in each client's store, nothing of them in the run folder
    for c in prep.clients:
        folder = c.store.folder
        figures = json.loads((folder / "figures.json").read_text())["1"]
        assert {"rag_loss", "norag_loss", "exact_match", "rag_exact_match", "retrieval_embed_ms"} <= set(figures)
        assert figures["norag_loss"] == pytest.approx(figures["personal_loss"])
        assert (folder / "retrieval" / "vectors.safetensors").is_file()
    leaked = [p for p in run.path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == [] and not str(run.clients_dir).startswith(str(run.path) + "/")
    kinds = (ClientRetrieval, RetrievalIndex, Document, Chunk, Passage, Encoded)
    assert [type(o).__name__ for o in object_walk([engine.server]) if isinstance(o, kinds)] == []
    assert any(isinstance(o, RetrievalIndex) for o in object_walk([engine]))  # the walk can find one


def test_a_client_without_its_document_folder_is_named_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    cfg = load_config(None, [*TINY, f"rag.documents={json.dumps(str(tmp_path / 'docs'))}"])
    with pytest.raises(UserError, match=r"rag.documents: .*docs has no folder for client '.+'; add .+ with its"):
        prepare(cfg)


def test_exact_match_normalises_like_squad() -> None:
    assert normalize_answer("  The Grandson!  ") == "grandson"
    assert exact_match(["The grandson.", "a cat", "no"], ["grandson", "the dog", "No"]) == pytest.approx(2 / 3)


def test_chat_retrieval_brings_the_clients_note_and_names_its_source(tmp_path: Path) -> None:
    from openpfi.assembly.retrieval import chat_retrieval
    from openpfi.models.loader import load_tokenizer

    probe = load_config(None, TINY)
    ids = [c.client_id for c in load_clients(probe)[1]]
    docs = _docs(tmp_path / "docs", ids)
    cfg = load_config(None, [*TINY, f"rag.documents={json.dumps(str(docs))}"])
    chat = chat_retrieval(cfg, ids[0], load_tokenizer("tiny-random"), tmp_path / "store")
    assert chat.context_for(f"What is the {SECRET} code?") == [f"The {SECRET} code of {ids[0]} is 4417."]
    assert chat.sources().startswith("sources: [1] note.txt (")
    assert (tmp_path / "store" / "retrieval" / "state.json").is_file()
    with pytest.raises(UserError, match="client 'nobody' is not in this run"):
        chat_retrieval(cfg, "nobody", None, None)


def _empty(docs: Path, ids: list[str]) -> None:
    for c in ids:
        (docs / c).mkdir()


def _binary(docs: Path, ids: list[str]) -> None:
    _empty(docs, ids)
    for c in ids:
        (docs / c / "a.txt").write_bytes(b"\x00\x01")


@pytest.mark.parametrize(("make", "message"), [
    (lambda docs, ids: None, "has no folder for client"),
    (_empty, "holds no documents"),
    (_binary, "is a binary file"),
])
def test_bad_document_folders_exit_2_with_one_line_and_write_nothing(tmp_path: Path, make, message: str) -> None:
    from typer.testing import CliRunner

    from openpfi.cli import app

    docs = tmp_path / "docs"
    docs.mkdir()
    make(docs, [c.client_id for c in load_clients(load_config(None, TINY))[1]])
    (tmp_path / "c.toml").write_text("")
    args = ["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"), "--quiet"]
    for s in [*TINY, f"rag.documents={json.dumps(str(docs))}"]:
        args += ["--set", s]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.clients").exists()


def test_chat_rag_shows_the_sources_from_the_clients_own_documents(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from openpfi.cli import app

    ids = [c.client_id for c in load_clients(load_config(None, TINY))[1]]
    docs = _docs(tmp_path / "docs", ids)
    (tmp_path / "c.toml").write_text("")
    args = ["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"), "--quiet"]
    for s in [*TINY[:-3], "rag.exact_match=false", f"rag.documents={json.dumps(str(docs))}"]:
        args += ["--set", s]
    assert CliRunner().invoke(app, args).exit_code == 0
    res = CliRunner().invoke(app, ["chat", str(tmp_path / "run"), "--client", ids[1], "--rag", "--show-sources",
                                   "--prompt", f"What is the {SECRET} code?", "--max-new-tokens", "3"])
    assert res.exit_code == 0, res.output
    assert "sources: [1] note.txt (" in res.output
