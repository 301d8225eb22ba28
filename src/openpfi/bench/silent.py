"""`openpfi bench silent`: injected silent failures with ground truth, benign controls, and what
standard metrics miss.

For every scenario file (``benchmarks/silent/*.toml``, :mod:`openpfi.bench.silent_scenarios`)
and seed, one monitored federated run on the bundled model:

    config   = examples/demo.toml < profile (_suite.toml [full] / [quick]) < the scenario's sections
    run      = federated_sft.start(config, monitor=plan_monitor(config),
                                   before_round=[InjectionHook])     # client side only
    score    = the run's alarms (audit.jsonl) against its ground truth (ground_truth.json)

Per scenario it reports whether the monitor alarmed on the right mode, the delay after onset,
false alarms (wrong mode, or any alarm on a control), the final models' utility, the privacy
budget spent and what the standard metrics (training loss, global held-out loss) did over the
same rounds; then the coverage row "openpfi: direct / proxy / none" over the six modes, set by
what was measured (:mod:`openpfi.bench.silent_score`). Detector thresholds are the monitor's
own, the same for every scenario.

Runs live in ``<out stem>.runs/<scenario>/seed-<s>/`` (a normal run folder plus
``ground_truth.json`` and ``result.json``); ``--resume`` skips the runs whose ``result.json``
matches their config, and restarts unfinished ones.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from openpfi.bench.common import write_json
from openpfi.bench.silent_plan import BenchPlan, expected_seconds, make_plan, run_config
from openpfi.bench.silent_run import config_sha, finished, run_one, safety_adapter, speed_note
from openpfi.bench.silent_scenarios import POSITIVE_CONTROL_KINDS, Scenario
from openpfi.bench.silent_score import (
    RunScore,
    ScenarioSummary,
    coverage,
    coverage_header,
    coverage_row,
    summarize,
)
from openpfi.errors import UserError
from openpfi.monitor.modes import MODES


def _fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.0f}%"


def _median(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(statistics.median(vals)) if vals else None


def scenario_rows(plan: BenchPlan, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary row per scenario (over its seeds)."""
    rows = []
    for sc in plan.scenarios:
        mine = [r for r in results if r["scenario"] == sc.name]
        if not mine:
            continue
        scores = [RunScore(**{**r["score"], "false_alarm_modes": tuple(r["score"]["false_alarm_modes"]),
                              "modes_alarmed": tuple(r["score"]["modes_alarmed"])}) for r in mine]
        s: ScenarioSummary = summarize(sc.name, scores)
        inj = sc.injection
        rows.append({
            **s.to_dict(),
            "kind": inj.kind,
            "description": sc.spec.scenario.description,
            "injected": (f"{len(mine[0]['injected_clients'])}/{mine[0]['num_clients']} clients from round "
                         f"{mine[0]['onset']}") if not sc.is_control else "nothing",
            "modes_alarmed": sorted({m for x in scores for m in x.modes_alarmed}),
            "train_loss_change": _median([r["standard_metrics"].get("train_loss_change") for r in mine]),
            "heldout_loss_change": _median([r["standard_metrics"].get("heldout_loss_change") for r in mine]),
            "final_heldout_loss": _median([r["utility"]["final_heldout_loss_mean"] for r in mine]),
            "epsilon": max((r["epsilon"] or 0.0) for r in mine),
            "seconds": sum(r["seconds"] for r in mine),
        })
    return rows


def suite_coverage(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The coverage row from ``scenario_rows``, positive controls left out: a detection of a failure
    trained on the probes themselves says the streams work, not that the failure is caught."""
    return coverage([ScenarioSummary(r["scenario"], r["expect"], r["runs"], r["detected_runs"], r["delays"],
                                     r["false_alarms"], r["false_alarm_modes"], r["any_alarm_after_onset_runs"])
                     for r in rows if r["kind"] not in POSITIVE_CONTROL_KINDS])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ("| scenario | expected mode | injected | detected (runs) | delay (rounds) | false alarms | modes alarmed "
            "| train loss change | held-out loss change | final held-out loss | epsilon |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        det = "control" if r["expect"] == "none" else f"{r['detected_runs']}/{r['runs']}"
        if r["expect"] != "none" and r["detected_runs"] < r["runs"]:
            det += " MISSED" if r["detected_runs"] == 0 else " partly"
        delay = "-" if r["median_delay"] is None else f"{r['median_delay']:g}"
        loss = "n/a" if r["final_heldout_loss"] is None else f"{r['final_heldout_loss']:.3f}"
        lines.append(
            f"| {r['scenario']} | {r['expect']} | {r['injected']} | {det} | {delay} | {r['false_alarms']} | "
            f"{', '.join(r['modes_alarmed']) or '-'} | {_fmt_pct(r['train_loss_change'])} | "
            f"{_fmt_pct(r['heldout_loss_change'])} | {loss} | {r['epsilon']:.2f} |"
        )
    return "\n".join(lines)


def _run_all(plan: BenchPlan, configs: Sequence[Any], expected: float, resume: bool,
             console: Console) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Every (scenario, seed) run of the plan, the finished ones read back on ``resume``."""
    adapter: dict[str, Any] | None = None
    if any(s.spec.scenario.start == "safety_adapter" for s in plan.scenarios):
        adapter = safety_adapter(configs[0], console)

    def start_of(scenario: Scenario) -> str:
        return adapter["path"] if adapter and scenario.spec.scenario.start == "safety_adapter" else ""

    earlier = [finished(plan.folder(s, seed), config_sha(run_config(plan, s, seed, start_of(s)), s))
               if resume else None for s, seed in plan.runs()]
    if resume:
        done_idx = {i for i, f in enumerate(earlier) if f is not None}
        console.print(f"resuming: {len(done_idx)} of {len(configs)} runs finished earlier; the rest take "
                      f"~{expected_seconds(plan, configs, done_idx) / 60:.0f} min", highlight=False)
    results = []
    for (scenario, seed), done in zip(plan.runs(), earlier, strict=True):
        if done is not None:
            console.print(f"  {scenario.name} seed {seed}: finished earlier, skipped", highlight=False)
            results.append(done)
            continue
        res = run_one(plan, scenario, seed, start_of(scenario), console)
        sc = res["score"]
        console.print(
            f"  {scenario.name} seed {seed}: expected {scenario.expect}, detected={sc['detected']} "
            f"delay={sc['delay']} false alarms={sc['false_alarms']} ({res['seconds']:.0f}s)",
            highlight=False,
        )
        results.append(res)
    return results, adapter


def _payload(plan: BenchPlan, model: str, expected: float, seconds: float, results: list[dict[str, Any]],
             adapter: dict[str, Any] | None) -> dict[str, Any]:
    rows = scenario_rows(plan, results)
    cov = suite_coverage(rows)
    false_alarms = sum(r["false_alarms"] for r in rows)
    epsilon_max = max((r["epsilon"] for r in rows), default=0.0)
    return {
        "benchmark": "silent",
        "profile": plan.profile_name,
        "seeds": plan.seeds,
        "model": model,
        "expected_seconds": expected,
        "seconds": seconds,
        "scenarios": rows,
        "runs": results,
        "coverage": cov,
        "coverage_row": coverage_row(cov),
        "false_alarms_total": false_alarms,
        "control_false_alarms": sum(r["false_alarms"] for r in rows if r["expect"] == "none"),
        "epsilon_max": epsilon_max,
        "safety_adapter": adapter,
        "targets": {
            "detected_within_rounds": 3,
            "controls_without_alarm": True,
            "epsilon_at_most": 8.0,
            "met": all(v == "direct" for v in cov.values()) and false_alarms == 0 and epsilon_max <= 8.0,
        },
        "table_markdown": markdown_table(rows),
    }


def run_silent_bench(
    out: Path,
    *,
    quick: bool = False,
    seeds: int | None = None,
    resume: bool = False,
    scenarios_dir: Path | None = None,
    only: Sequence[str] = (),
    model: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    console = console or Console()
    plan = make_plan(out, quick, seeds, scenarios_dir, only, model)
    if plan.work.is_dir() and any(plan.work.iterdir()) and not resume:
        raise UserError(f"{plan.work} holds runs of an earlier suite; add --resume to continue it, or pass another --out")
    configs = [run_config(plan, s, seed) for s, seed in plan.runs()]
    expected = expected_seconds(plan, configs)
    name = configs[0].model.name
    console.print(
        f"silent-failure benchmark ({plan.profile_name}): {len(plan.scenarios)} scenarios x {plan.seeds} seeds = "
        f"{len(configs)} runs on {name}; expected duration ~{expected / 60:.0f} min{speed_note(name)}"
        f" (runs in {plan.work})",
        highlight=False,
    )
    t_start = time.perf_counter()
    results, adapter = _run_all(plan, configs, expected, resume, console)
    payload = _payload(plan, name, expected, time.perf_counter() - t_start, results, adapter)
    write_json(out, payload)
    console.print(payload["table_markdown"], highlight=False, soft_wrap=True)
    console.print("\n" + coverage_header() + "\n" + payload["coverage_row"], highlight=False, soft_wrap=True)
    _print_summary(console, payload, plan)
    return payload


def _print_summary(console: Console, payload: dict[str, Any], plan: BenchPlan) -> None:
    t = Table(title="coverage (measured)")
    for m in MODES:
        t.add_column(m.replace("_", " "))
    t.add_row(*(payload["coverage"][m] for m in MODES))
    console.print(t)
    console.print(
        f"false alarms: {payload['false_alarms_total']} (controls: {payload['control_false_alarms']}); max epsilon "
        f"{payload['epsilon_max']:.2f}; {payload['seconds'] / 60:.1f} min (expected {payload['expected_seconds'] / 60:.0f})",
        highlight=False,
    )
