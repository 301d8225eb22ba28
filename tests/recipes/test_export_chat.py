"""`openpfi export` and `openpfi chat` on a tiny Ditto run: formats, model card, bad input, the terminal loop."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import pytest
import torch
from typer.testing import CliRunner

from openpfi.assembly.clients import load_shared
from openpfi.assembly.run_model import load_run_model, run_clients
from openpfi.cli import app
from openpfi.config import load_config
from openpfi.recipes import federated_sft
from openpfi.recipes.chat import open_session

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.toml"
TINY = [
    "model.name=tiny-random", "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=2",
    "client.local_steps=2", "client.max_length=48", "client.batch_size=2", "monitor.enabled=false",
    "data.max_examples=24", "data.min_examples=10", "client.max_eval_examples=4", "lora.r=4", "client.lr=0.01",
    'personalization.method="ditto"',
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return federated_sft.start(load_config(DEMO, TINY), tmp_path_factory.mktemp("ditto") / "run")


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_merged_export_loads_offline_with_the_same_logits(run, tmp_path: Path) -> None:
    # Prepare
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client = run_clients(run)[0]
    # Execute
    res = _cli("export", run.path, "--client", client, "--format", "merged", "--out", tmp_path / "m")
    # Assert
    assert res.exit_code == 0, res.output
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert tok.chat_template and (tmp_path / "m" / "model.safetensors").is_file()
    ours = load_run_model(run.path, client=client)
    ids = tok("Hello there, what should I cook?", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (model(ids).logits - ours.shared.model(ids).logits).abs().max()
    assert diff < 1e-4
    card = (tmp_path / "m" / "README.md").read_text()
    manifest = json.loads((run.path / "manifest.json").read_text())["model"]
    assert manifest["sha256"] in card and manifest["licence"] in card and "license: apache-2.0" in card


def test_peft_export_stands_alone_with_its_base(run, tmp_path: Path) -> None:
    res = _cli("export", run.path, "--out", tmp_path / "p", "--round", "1")
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str((tmp_path / "p" / "base").absolute())
    assert (tmp_path / "p" / "base" / "config.json").is_file() and (tmp_path / "p" / "base" / "README.md").is_file()
    assert json.loads((tmp_path / "p" / "openpfi-adapter.json").read_text())["round"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--client", "nobody"], "client 'nobody' is not in the run"),
        (["--round", "9"], "round 9 has no checkpoint"),
        (["--format", "onnx"], "--format 'onnx' is unknown"),
    ],
)
def test_export_bad_input_is_one_line_exit_2_nothing_written(run, tmp_path: Path, args: list[str], message: str) -> None:
    res = _cli("export", run.path, "--out", tmp_path / "x", *args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


def test_export_refuses_a_non_empty_folder_and_chat_both_choices(run, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    res = _cli("export", run.path, "--out", tmp_path / "x")
    assert res.exit_code == 2 and "not empty" in res.output
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["keep.txt"]
    res = _cli("chat", run.path, "--global", "--client", run_clients(run)[0], "--prompt", "hi")
    assert res.exit_code == 2 and "either --client ID or --global" in res.output


def test_model_adapter_accepts_a_checkpoint_folder(run) -> None:
    cfg = load_config(DEMO, [*TINY, f"model.adapter={run.checkpoint_folder(2)}"])
    _, start = load_shared(cfg)
    saved = run.load_checkpoint(2).adapter
    assert all(torch.equal(start[k], saved[k]) for k in saved)


def test_chat_session_streams_and_keeps_history(run) -> None:
    session = open_session(run.path, run_clients(run)[1], max_new_tokens=5, temperature=0.0)
    pieces = list(session.reply("Hello!"))
    assert session.last.new_tokens == 5 and "".join(pieces) == session.last.text
    assert session.last.first_token_s > 0 and len(session.history) == 1
    assert session.messages("And now?")[:2] == [{"role": "user", "content": "Hello!"},
                                                {"role": "assistant", "content": session.last.text.strip()}]


def test_interactive_chat_through_a_pseudo_terminal(run) -> None:
    # Prepare: the real CLI on a pty, as a person would use it (sampling: greedy tiny-random says only newlines)
    exe = str(Path(sys.executable).with_name("openpfi"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    child = pexpect.spawn(exe, ["chat", str(run.path), "--global", "--max-new-tokens", "6", "--temperature", "1"],
                          env=env, encoding="utf-8", timeout=120)
    # Execute
    child.expect_exact("you> ")
    child.sendline("Hello, how are you?")
    child.expect_exact("assistant> ")
    child.expect_exact("you> ")
    answer = child.before.strip()
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    # Assert
    assert answer, "no answer came back"
    assert child.exitstatus == 0
