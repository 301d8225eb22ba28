"""`openpfi bench personalize`: which personalization method serves each client best.

Every method (``personalization.method``, and the LoRA aggregations on FedAvg)
runs on chitchat (client = user), shakespeare (client = play x character) and
the retrieval data set ``memory`` (client = BBQ category, bench/rag_data.py)
with the same clients, rounds, local steps, batch and learning rate, for
several seeds (a seed changes which users are drawn, the LoRA init and the
batches). Every client takes part in every round (cross-silo), so after the
last round every client has been evaluated on its own held-out split:

- ``own`` loss: the client's own model (personalized methods: its personal
  model; FedAvg-like methods: the global model) — mean, worst decile (mean of
  the worst 10 % of clients) and spread (standard deviation across clients);
- the same model with and without retrieval over the client's own documents
  (loss; exact match on ``memory``; latency and index build time: personalize_rag.py);
- bytes up and down per round (metrics.jsonl, what a deployment would send);
- wall time of the run.

Runs live in ``<out stem>.runs/<dataset>/<method>/seed-<s>/`` (ordinary run
folders). A finished run holds ``bench-result.json`` and is skipped when the
benchmark is started again with the same settings; an interrupted one is
continued with ``resume``. So a killed benchmark restarts where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from openpfi.assembly.manifest import machine, package_versions
from openpfi.bench import personalize_rag as rag
from openpfi.bench.common import write_json
from openpfi.bench.personalize_methods import METHODS, Method
from openpfi.bench.personalize_plot import plot
from openpfi.client.store import client_figures
from openpfi.config import Config, dump_toml, load_config
from openpfi.engines.inprocess import SilentReporter
from openpfi.errors import UserError
from openpfi.recipes import federated_sft
from openpfi.runfolder import RunFolder

RESULT_FILE = "bench-result.json"
RESULT_VERSION = 1


# Measured alone on the project's 2-core machine (SmolLM2-135M, bf16; see docs/BENCHMARKS-personalize.md):
STEP_SECONDS_PER_TOKEN = 1.0 / 550.0
"""Training: seconds per padded token of a step (forward + backward + optimizer), measured on
the quick plan; a plan whose clients hold longer texts sets its own (``BenchPlan``)."""
EVAL_SECONDS_PER_TOKEN = 1.0 / 1650.0


@dataclass(frozen=True)
class BenchPlan:
    quick: bool
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    clients: int
    rounds: int
    local_steps: int
    batch_size: int = 4
    max_length: int = 128
    lr: float = 1e-3
    eval_examples: int = 16
    min_examples: int = 20
    max_examples: int = 60
    ditto_lambda: float = 0.1
    extra: tuple[str, ...] = field(default_factory=tuple)
    step_seconds_per_token: float = STEP_SECONDS_PER_TOKEN
    """Measured training cost of this plan (for the duration estimate)."""
    eval_seconds_per_token: float = EVAL_SECONDS_PER_TOKEN

    def sets(self, dataset: str, method: Method, seed: int, model: str, root: Path = Path(".")) -> list[str]:
        """``root``: the benchmark's runs folder (the memory data set is written there)."""
        return [
            f"seed={seed}",
            f'model.name="{model}"',
            'data.partition="natural"',
            f"data.num_clients={self.clients}",
            f"data.min_examples={self.min_examples}",
            f"data.max_examples={self.max_examples}",
            f"federation.clients_per_round={self.clients}",
            f"federation.rounds={self.rounds}",
            f"client.local_steps={self.local_steps}",
            f"client.batch_size={self.batch_size}",
            f"client.max_length={self.max_length}",
            f"client.lr={self.lr}",
            f"client.max_eval_examples={self.eval_examples}",
            f"client.eval_batch_size={self.eval_examples}",
            f"personalization.ditto_lambda={self.ditto_lambda}",
            f"federation.eval_every={self.rounds}",  # every client evaluated after the last round only
            "monitor.enabled=false",
            *rag.dataset_sets(dataset, root, self.clients),
            *method.sets,
            *self.extra,
        ]

    def runs(self) -> list[tuple[str, Method, int]]:
        chosen = [m for m in METHODS if m.name in self.methods]
        return [(d, m, s) for d in self.datasets for s in self.seeds for m in chosen
                if rag.runs_on(d, m.name) and m.only_on in ("", d)]


FULL = BenchPlan(
    quick=False,
    datasets=("chitchat", "shakespeare", rag.MEMORY),
    seeds=(0, 1),
    methods=tuple(m.name for m in METHODS),
    clients=20,
    rounds=3,
    local_steps=2,
    max_length=96,
    eval_examples=12,
    min_examples=20,
    max_examples=80,
    # measured on this plan's first runs (chitchat, 20 clients: 50 s per round of 3 steps x 20
    # clients, 14 s per evaluation): its clients' texts are longer than the quick plan's
    step_seconds_per_token=1.0 / 410.0,
    eval_seconds_per_token=1.0 / 1450.0,
)
QUICK = BenchPlan(
    quick=True,
    datasets=("chitchat", "shakespeare", rag.MEMORY),
    seeds=(0,),
    methods=tuple(m.name for m in METHODS),
    clients=5,
    rounds=2,
    local_steps=2,
    max_length=96,
    eval_examples=8,
    min_examples=20,
    max_examples=80,
)

SETUP_SECONDS = 8.0
"""Per run: load the data, the model (cached safetensors) and tokenize."""
TOKENS_PER_EXAMPLE = {"chitchat": 85.0, "shakespeare": 105.0, rag.MEMORY: 60.0}
"""Padded tokens per example (chat template included): mean length 68 and 86, x 1.25 for padding."""


def expected_seconds(plan: BenchPlan) -> float:
    """A rough duration from per-token costs; refined after each run from measured ones."""
    total = 0.0
    for dataset, method, _ in plan.runs():
        tok = min(TOKENS_PER_EXAMPLE.get(dataset, 60.0), plan.max_length)
        trained = rag.TRAIN_SET in method.sets
        step = plan.batch_size * (tok + (rag.TRAIN_PASSAGE_TOKENS if trained else 0.0)) * plan.step_seconds_per_token
        train = plan.rounds * plan.local_steps * step * method.train_phases
        if method.name == "finetune":  # fine-tuning before the (final) evaluation only
            train += plan.local_steps * step
        evals = (2 if method.personal else 1) * plan.eval_examples * tok * plan.eval_seconds_per_token
        evals += rag.extra_seconds(dataset, plan.max_examples, plan.eval_examples)
        total += SETUP_SECONDS + rag.clients_of(dataset, plan.clients) * (train + evals)
    return total


def _sha(cfg: Config) -> str:
    return hashlib.sha256(f"v{RESULT_VERSION}\n{dump_toml(cfg)}".encode()).hexdigest()


def _worst_decile(xs: Sequence[float]) -> float:
    k = max(1, math.ceil(len(xs) / 10))
    return float(statistics.fmean(sorted(xs)[-k:]))


def run_summary(rows: list[dict[str, Any]], figures: dict[str, dict[int, dict[str, float]]]) -> dict[str, Any]:
    """Figures of one finished run: its metrics rows and the clients' own ``figures`` (their stores)."""
    last = rows[-1]
    r_last = int(last["round"])
    latest = {cid: f[r_last] for cid, f in figures.items() if "eval_loss" in f.get(r_last, {})}
    own = {cid: c.get("personal_loss", c["eval_loss"]) for cid, c in latest.items()}
    glob = {cid: c["eval_loss"] for cid, c in latest.items()}
    xs = list(own.values())
    return {
        "clients": len(xs),
        "own_loss": own,
        "global_loss": glob,
        "mean": float(statistics.fmean(xs)),
        "worst_decile": _worst_decile(xs),
        "spread": float(statistics.pstdev(xs)) if len(xs) > 1 else 0.0,
        "global_mean": float(statistics.fmean(glob.values())),
        "bytes_up_per_round": float(statistics.fmean(r.get("bytes_up", 0.0) for r in rows)),
        "bytes_down_per_round": float(statistics.fmean(r.get("bytes_down", 0.0) for r in rows)),
        "wall_s": float(sum(r.get("timings", {}).get("round_s", 0.0) for r in rows)),
        "train_s": float(sum(r.get("timings", {}).get("train_s", 0.0) for r in rows)),
        "eval_s": float(sum(r.get("timings", {}).get("evaluate_s", 0.0) for r in rows)),
        "tokens": float(sum(r.get("tokens", 0.0) for r in rows)),
        "rounds": len(rows),
        "train_loss_last": float(last.get("train_loss", float("nan"))),
        "update_epsilon": last.get("update_epsilon_total"),
        "retrieval": rag.retrieval_summary(latest),
    }


class _Progress(SilentReporter):
    def __init__(self, console: Console, label: str):
        self.console, self.label = console, label

    def round_end(self, row: dict[str, Any]) -> None:
        mean = row.get("personal_loss_mean", row.get("eval_loss_mean"))
        seen = f"own loss {mean:.4f}" if mean is not None else f"train loss {row.get('train_loss', float('nan')):.4f}"
        secs = row.get("timings", {}).get("round_s", 0)
        self.console.print(f"  {self.label} round {row['round']}: {seen}  ({secs:.0f}s)", highlight=False)


def run_one(cfg: Config, folder: Path, label: str, console: Console) -> dict[str, Any]:
    """Run (or continue, or reuse) one configuration; return its summary."""
    sha = _sha(cfg)
    result = folder / RESULT_FILE
    if result.is_file():
        done = json.loads(result.read_text())
        if done.get("config_sha") == sha:
            console.print(f"  {label}: already done, reused", highlight=False)
            return dict(done["summary"])
    reporter = _Progress(console, label)
    resumable = (folder / "config.toml").is_file() and RunFolder(folder).completed_rounds()
    if resumable and _sha(load_config(folder / "config.toml")) == sha:
        console.print(f"  {label}: continuing an interrupted run", highlight=False)
        federated_sft.resume(folder, reporter=reporter)
    else:
        if folder.exists():
            shutil.rmtree(folder)
        federated_sft.start(cfg, folder, force=True, reporter=reporter)
    rows, store = RunFolder.open(folder).read_metrics(), RunFolder.open(folder).clients_dir
    summary = run_summary(rows, client_figures(store, up_to_round=int(rows[-1]["round"])))
    write_json(result, {"config_sha": sha, "summary": summary})
    return summary


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": float(statistics.fmean(values)),
        "sd": float(statistics.stdev(values)) if len(values) > 1 else 0.0,
    }


def summarize(plan: BenchPlan, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per dataset and method: seed-averaged figures (sd across seeds), winners and comparisons."""
    out: dict[str, Any] = {}
    for dataset in plan.datasets:
        per: dict[str, Any] = {}
        for m in METHODS:
            runs = [r for r in results if r["dataset"] == dataset and r["method"] == m.name]
            if not runs:
                continue
            s = [r["summary"] for r in runs]
            per[m.name] = {
                "label": m.label,
                "personalized": m.personal,
                "seeds": len(runs),
                **{k: _stats([x[k] for x in s]) for k in ("mean", "worst_decile", "spread", "global_mean")},
                "bytes_up_per_round": statistics.fmean(x["bytes_up_per_round"] for x in s),
                "bytes_down_per_round": statistics.fmean(x["bytes_down_per_round"] for x in s),
                "wall_s": statistics.fmean(x["wall_s"] for x in s),
                "retrieval": rag.seed_means(s),
            }
        if not per:
            continue
        base = [r["summary"]["global_mean"] for r in results if r["dataset"] == dataset and r["method"] == "local"]
        best = min(per, key=lambda k: per[k]["mean"]["mean"])
        best_worst = min(per, key=lambda k: per[k]["worst_decile"]["mean"])
        beats: list[str] = []
        if "fedavg" in per and "local" in per:
            bar = min(per["fedavg"]["mean"]["mean"], per["local"]["mean"]["mean"])
            beats = [k for k, v in per.items() if v["personalized"] and k != "local" and v["mean"]["mean"] < bar]
        out[dataset] = {
            "methods": per,
            "base_model_mean": float(statistics.fmean(base)) if base else None,
            "best_mean": best,
            "best_worst_decile": best_worst,
            "personalized_beating_fedavg_and_local": beats,
        }
        if "fedavg" in per and "fedavg-dp" in per:
            eps = [r["summary"].get("update_epsilon") for r in results
                   if r["dataset"] == dataset and r["method"] == "fedavg-dp"]
            out[dataset]["dp_utility_cost"] = {
                "loss_without_dp": per["fedavg"]["mean"]["mean"], "loss_with_dp": per["fedavg-dp"]["mean"]["mean"],
                "update_epsilon": max((e for e in eps if e is not None), default=None),
            }
    return out


def _fmt_bytes(x: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(x) < 1000:
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000
    return f"{x:.1f} TB"


def table(summary: dict[str, Any]) -> Table:
    t = Table(title="Held-out loss of each client's own model after the last round (lower is better; * best mean)")
    for col in ("data", "method", "mean", "worst 10%", "spread", "global", "up/rnd", "down/rnd", "wall"):
        t.add_column(col, justify="left" if col in ("data", "method") else "right", no_wrap=True)
    for dataset, d in summary.items():
        for name, v in d["methods"].items():
            star = " *" if name == d["best_mean"] else ""
            sd = f" ±{v['mean']['sd']:.3f}" if v["seeds"] > 1 else ""
            t.add_row(
                dataset[:5],
                name + star,
                f"{v['mean']['mean']:.4f}{sd}",
                f"{v['worst_decile']['mean']:.4f}",
                f"{v['spread']['mean']:.4f}",
                f"{v['global_mean']['mean']:.4f}",
                _fmt_bytes(v["bytes_up_per_round"]),
                _fmt_bytes(v["bytes_down_per_round"]),
                f"{v['wall_s']:.0f}s",
            )
        if d["base_model_mean"] is not None:
            t.add_row(dataset[:5], "(base model)", f"{d['base_model_mean']:.4f}", "", "", "", "", "", "")
        cost = d.get("dp_utility_cost")
        if cost:
            t.add_row(dataset[:5], f"DP cost (eps {cost['update_epsilon'] or float('nan'):.2g})",
                      f"{cost['loss_with_dp'] - cost['loss_without_dp']:+.4f}", "", "", "", "", "", "")
        t.add_section()
    return t


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| dataset | method | mean | worst decile | spread | global mean | bytes up/round | bytes down/round | wall |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dataset, d in summary.items():
        for name, v in d["methods"].items():
            star = " **(best)**" if name == d["best_mean"] else ""
            sd = f" ± {v['mean']['sd']:.3f}" if v["seeds"] > 1 else ""
            lines.append(
                f"| {dataset} | {v['label']}{star} | {v['mean']['mean']:.4f}{sd} | {v['worst_decile']['mean']:.4f} | "
                f"{v['spread']['mean']:.4f} | {v['global_mean']['mean']:.4f} | {_fmt_bytes(v['bytes_up_per_round'])} | "
                f"{_fmt_bytes(v['bytes_down_per_round'])} | {v['wall_s']:.0f} s |"
            )
        if d["base_model_mean"] is not None:
            lines.append(f"| {dataset} | base model, no training | {d['base_model_mean']:.4f} | | | | | | |")
    return "\n".join(lines)


def run_personalize_bench(
    out: Path,
    quick: bool = False,
    model: str = "smollm2-135m-instruct",
    only: Sequence[str] = (),
    console: Console | None = None,
    plan: BenchPlan | None = None,
    datasets: Sequence[str] = (),
) -> dict[str, Any]:
    console = console or Console()
    plan = plan or (QUICK if quick else FULL)
    if only:
        plan = BenchPlan(**{**asdict(plan), "methods": tuple(m for m in plan.methods if m in only)})
    unknown = sorted(set(datasets) - set(plan.datasets))
    if unknown:
        raise UserError(f"--dataset {unknown[0]}: not a data set of this plan; choose from {list(plan.datasets)}")
    if datasets:
        plan = BenchPlan(**{**asdict(plan), "datasets": tuple(d for d in plan.datasets if d in datasets)})
    runs = plan.runs()
    est = expected_seconds(plan)
    console.print(
        f"[bold]bench personalize[/] ({'quick' if plan.quick else 'full'}): {len(runs)} runs = "
        f"{len(plan.datasets)} datasets x {len(plan.seeds)} seeds x {len(runs) // max(1, len(plan.datasets) * len(plan.seeds))} "
        f"methods; {plan.clients} clients, {plan.rounds} rounds x {plan.local_steps} local steps. "
        f"Expected duration: ~{est / 60:.0f} min on the project's 2-core machine alone "
        f"(finished runs in {out.with_suffix('.runs')} are reused)",
        highlight=False,
    )
    root = out.with_suffix(".runs")
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for i, (dataset, method, seed) in enumerate(runs):
        label = f"[{i + 1}/{len(runs)}] {dataset} {method.name} seed {seed}"
        cfg = load_config(None, plan.sets(dataset, method, seed, model, root))
        summary = run_one(cfg, root / dataset / method.name / f"seed-{seed}", label, console)
        results.append({"dataset": dataset, "method": method.name, "seed": seed, "summary": summary})
        elapsed = time.perf_counter() - t0
        left = elapsed / (i + 1) * (len(runs) - i - 1)
        console.print(
            f"  {label}: own loss mean {summary['mean']:.4f}, worst decile {summary['worst_decile']:.4f}; "
            f"elapsed {elapsed / 60:.1f} min, ~{left / 60:.0f} min left",
            highlight=False,
        )
    summary = summarize(plan, results)
    speed = rag.index_speed() if model != "tiny-random" else rag.index_speed(20, 5)
    png = out.with_suffix(".png")
    plot(summary, png)
    payload = {
        "benchmark": "personalize",
        "quick": plan.quick,
        "command": f"openpfi bench personalize --out {out}{' --quick' if plan.quick else ''}",
        "model": model,
        "plan": asdict(plan),
        "expected_seconds": est,
        "elapsed_seconds": time.perf_counter() - t0,
        "machine": machine(),
        "versions": package_versions(),
        "summary": summary,
        "markdown": markdown(summary),
        "retrieval_markdown": rag.markdown(summary),
        "retrieval_speed": speed,
        "plot": str(png),
        "runs": results,
    }
    write_json(out, payload)
    console.print(table(summary), width=max(console.width, 132))
    console.print(rag.table(summary), width=max(console.width, 132))
    console.print(rag.speed_line(speed), highlight=False)
    for dataset, d in summary.items():
        beats = d["personalized_beating_fedavg_and_local"]
        console.print(
            f"{dataset}: best mean = {d['methods'][d['best_mean']]['label']}; best worst decile = "
            f"{d['methods'][d['best_worst_decile']]['label']}; personalized methods beating both FedAvg and "
            f"local-only on mean: {', '.join(beats) if beats else 'none'}",
            highlight=False,
        )
    console.print(f"wrote {out} and {png}")
    return payload
