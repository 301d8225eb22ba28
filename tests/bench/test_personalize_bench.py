"""`openpfi bench personalize` mechanics on tiny-random: JSON, PNG, statistics, reuse of finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from openpfi.bench.personalize import FULL, QUICK, BenchPlan, expected_seconds, run_personalize_bench, run_summary


def _row(r: int) -> dict:
    return {"round": r, "bytes_up": 10.0 * r, "bytes_down": 20.0, "timings": {"round_s": 1.5}}


def _figures(rounds: list[int], losses: dict[str, float], personal: bool) -> dict:
    """The clients' own figures (their stores): the global model at 9.0, their own at ``losses``."""
    key = "personal_loss" if personal else "eval_loss"
    return {c: {r: {"eval_loss": 9.0, key: v} for r in rounds} for c, v in losses.items()}


def test_run_summary_statistics() -> None:
    losses = {f"c{i}": float(i) for i in range(1, 12)}  # 11 clients: the worst decile is the worst 2
    s = run_summary([_row(1), _row(2)], _figures([1, 2], losses, True))
    assert s["mean"] == pytest.approx(6.0)
    assert s["worst_decile"] == pytest.approx(10.5)
    assert s["spread"] == pytest.approx((sum((x - 6.0) ** 2 for x in losses.values()) / 11) ** 0.5)
    assert s["global_mean"] == 9.0 and s["bytes_up_per_round"] == 15.0 and s["wall_s"] == 3.0
    assert run_summary([_row(1)], _figures([1], losses, False))["mean"] == pytest.approx(6.0)
    # only the clients evaluated in the last round count
    late = {**_figures([1], losses, True), **_figures([1, 2], {"c1": 1.0, "c2": 3.0}, True)}
    assert run_summary([_row(1), _row(2)], late)["mean"] == pytest.approx(2.0)


def test_plans_fit_their_budgets() -> None:
    assert set(FULL.datasets) == {"chitchat", "shakespeare", "memory"} and len(FULL.seeds) >= 2 and FULL.clients >= 20
    assert len(set(FULL.methods)) == 15 and "fedavg-dp" in FULL.methods and set(QUICK.methods) == set(FULL.methods)
    memory = {m.name: m for d, m, _ in QUICK.runs() if d == "memory"}
    assert set(memory) == {"fedavg", "local", "finetune", "ditto", "fedavg+rag", "local+rag", "finetune+rag", "ditto+rag"}
    assert memory["ditto+rag"].sets == (*memory["ditto"].sets, "rag.train=true")
    assert not [m for d, m, _ in FULL.runs() if d != "memory" and "rag.train=true" in m.sets]
    assert {d for d, m, _ in FULL.runs() if m.name == "fedavg-dp"} == {"chitchat"}  # the demo's data set
    assert expected_seconds(FULL) <= 2.6 * 3600  # retrieval on every run, exact match on memory, DP on chitchat
    assert expected_seconds(QUICK) <= 18 * 60


def test_bench_writes_json_png_and_reuses_finished_runs(tmp_path: Path) -> None:
    plan = BenchPlan(
        quick=True, datasets=("chitchat",), seeds=(0,), methods=("fedavg", "local", "fedsa-lora"), clients=2,
        rounds=1, local_steps=1, max_length=48, eval_examples=2, min_examples=10, max_examples=12, extra=("lora.r=4",),
    )  # fmt: skip
    out = tmp_path / "b.json"
    console = Console(record=True, width=200)
    payload = run_personalize_bench(out, model="tiny-random", console=console, plan=plan)
    data = json.loads(out.read_text())
    assert data["summary"]["chitchat"]["methods"].keys() == {"fedavg", "local", "fedsa-lora"}
    assert data["summary"]["chitchat"]["methods"]["local"]["bytes_up_per_round"] == 0
    assert data["summary"]["chitchat"]["base_model_mean"] is not None
    rag = data["summary"]["chitchat"]["methods"]["fedavg"]["retrieval"]
    assert {"norag_loss", "rag_loss", "retrieval_embed_ms", "index_s_per_1k_chunks"} <= set(rag)
    assert "loss + retrieval" in data["retrieval_markdown"]
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "Expected duration" in console.export_text()
    # a second start reuses every finished run
    console = Console(record=True, width=200)
    again = run_personalize_bench(out, model="tiny-random", console=console, plan=plan)
    assert console.export_text().count("already done, reused") == 3
    assert again["summary"] == payload["summary"]
