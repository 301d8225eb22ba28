"""One run of `openpfi bench silent`: a monitored federated run with its injection, scored against its
ground truth (``result.json`` in the run's folder); the safety-tuned starting adapter."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from openpfi.bench.silent_inject import build_hook, make_encoder, probe_ids
from openpfi.bench.silent_plan import BenchPlan, run_config
from openpfi.bench.silent_scenarios import Scenario
from openpfi.bench.silent_score import score_run
from openpfi.config import Config, dump_toml
from openpfi.data import groups_are_public
from openpfi.engines.inprocess import SilentReporter
from openpfi.errors import UserError
from openpfi.models.registry import relative_cost
from openpfi.monitor.probes import group_probe_filter

RESULT_FILE = "result.json"
RESULT_VERSION = 1


def speed_note(model: str) -> str:
    cost = relative_cost(model)
    if cost is None:
        return " at SmolLM2-135M speed (a larger model takes longer)"
    return "" if cost == 1.0 else f" ({cost:g}x SmolLM2-135M's time, measured)"


def config_sha(cfg: Config, scenario: Scenario) -> str:
    text = dump_toml(cfg) + json.dumps(scenario.spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _alarms(folder: Path) -> list[dict[str, Any]]:
    from openpfi.monitor.audit import read_entries

    return [
        {k: e["payload"].get(k) for k in ("mode", "stream", "round", "magnitude", "threshold")}
        for e in read_entries(folder)
        if e["kind"] == "alarm"
    ]


def mode_margins(report: dict[str, Any], first_round: int) -> dict[str, dict[str, Any]]:
    """Per mode, the stream whose detector statistic came closest to its threshold from
    ``first_round`` on: ``{stream, round, statistic, threshold, ratio, detectable_shift}`` (ratio
    >= 1 = alarm; the shift it could see, monitor/detection/power.py, None for a paired-test stream).
    How far a missed mode was from alarming, read from report.json."""
    out: dict[str, dict[str, Any]] = {}
    for mode in report.get("modes", []):
        best: dict[str, Any] | None = None
        for metric in mode.get("metrics", []):
            h = metric.get("threshold") or 0.0
            for stream in metric.get("streams", []):
                for pt in stream.get("series", []):
                    stat = pt.get("statistic")
                    if stat is None or pt["round"] < first_round or h <= 0:
                        continue
                    if best is None or stat / h > best["ratio"]:
                        best = {"stream": stream["name"], "round": pt["round"], "statistic": stat,
                                "threshold": h, "ratio": stat / h,
                                "detectable_shift": (stream.get("detectable") or {}).get("shift")}
        if best is not None:
            out[mode["id"]] = best
    return out


def _change(series: dict[int, float], before: int, after: int) -> float | None:
    a, b = series.get(before), series.get(after)
    if a is None or b is None or not a:
        return None
    return (b - a) / abs(a)


def standard_metrics(rows: list[dict[str, Any]], onset: int | None, within: int) -> dict[str, Any]:
    """Training loss and global held-out loss per round, and their relative change over the window
    [onset - 1, onset + within - 1] (first to last round for a control)."""
    train = {int(r["round"]): float(r["train_loss"]) for r in rows if r.get("train_loss") is not None}
    held = {int(r["round"]): float(r["eval_loss_mean"]) for r in rows if r.get("eval_loss_mean") is not None}
    rounds = sorted(train)
    if not rounds:
        return {"rounds": [], "train_loss": [], "heldout_loss": []}
    first, last = rounds[0], rounds[-1]
    lo = max(first, onset - 1) if onset is not None else first
    hi = min(last, onset + within - 1) if onset is not None else last
    return {
        "rounds": rounds,
        "train_loss": [train[r] for r in rounds],
        "heldout_loss": [held.get(r) for r in rounds],
        "window": [lo, hi],
        "train_loss_change": _change(train, lo, hi),
        "heldout_loss_change": _change(held, lo, hi),
    }


def _collect(folder: Path, scenario: Scenario, seed: int, truth: dict[str, Any], seconds: float,
             cfg: Config, sha: str) -> dict[str, Any]:
    from openpfi.client.store import worst_figure
    from openpfi.runfolder import RunFolder

    rows = RunFolder.open(folder).read_metrics()
    alarms = _alarms(folder)
    onset = truth.get("start_round") if not scenario.is_control else None
    within = scenario.spec.expect.within_rounds
    score = score_run(alarms, scenario.expect, onset, within, scenario.spec.expect.also)
    ledger = json.loads((folder / "privacy.json").read_text()) if (folder / "privacy.json").is_file() else {}
    report = json.loads((folder / "report.json").read_text()) if (folder / "report.json").is_file() else {}
    last = rows[-1] if rows else {}
    return {
        "version": RESULT_VERSION,
        "scenario": scenario.name,
        "seed": seed,
        "config_sha256": sha,
        "expect": scenario.expect,
        "kind": scenario.injection.kind,
        "onset": onset,
        "injected_clients": truth.get("clients", []),
        "num_clients": cfg.data.num_clients,
        "rounds": cfg.federation.rounds,
        "alarms": alarms,
        "score": score.to_dict(),
        "standard_metrics": standard_metrics(rows, onset, within),
        "utility": {
            "final_heldout_loss_mean": last.get("eval_loss_mean"),
            "final_heldout_loss_worst": worst_figure(RunFolder.open(folder).clients_dir, int(last.get("round", 0))),
        },
        "closest_to_threshold": mode_margins(report, onset or 1),
        "epsilon": ledger.get("epsilon_total"),
        "delta": ledger.get("delta"),
        "seconds": seconds,
        "run_folder": str(folder),
    }


def languages(cfg: Config) -> list[str]:
    """The groups whose public texts the server scores (``monitor.groups``; for chatterbot without
    them, the data's languages): their texts are never injected (probes.group_probe_filter)."""
    if cfg.monitor.groups or not groups_are_public(cfg.data.source):
        return list(cfg.monitor.groups)
    return list(cfg.data.languages)


def run_one(plan: BenchPlan, scenario: Scenario, seed: int, adapter: str, console: Console) -> dict[str, Any]:
    """One monitored run with its injection; returns (and writes) its result."""
    from openpfi.assembly.monitor_plan import plan_monitor
    from openpfi.models.loader import load_tokenizer
    from openpfi.monitor.audit import AuditLog
    from openpfi.recipes import federated_sft

    cfg = run_config(plan, scenario, seed, adapter)
    folder = plan.folder(scenario, seed)
    sha = config_sha(cfg, scenario)
    monitor = plan_monitor(cfg)
    assert monitor is not None
    tokenizer = load_tokenizer(cfg.model.name)
    truth_box: dict[str, Any] = {}

    def record(truth: dict[str, Any]) -> None:
        truth_box.update(truth)
        AuditLog(folder / "audit.jsonl").append("action", {"benchmark_ground_truth": truth})

    hook = build_hook(
        scenario.name,
        scenario.expect,
        scenario.injection,
        cfg.data.num_clients,
        seed,
        make_encoder(tokenizer, cfg.client.max_length),
        probe_ids(monitor.suites),
        run_dir=folder,
        on_ground_truth=record,
        keep=group_probe_filter(languages(cfg), cfg.monitor.group_items, cfg.monitor.probe_seed),
        max_examples=cfg.data.max_examples,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    federated_sft.start(cfg, folder, force=True, reporter=_Progress(console, scenario.name, seed),
                        monitor=monitor, before_round=[hook])
    seconds = time.perf_counter() - t0
    result = _collect(folder, scenario, seed, truth_box or hook.ground_truth(), seconds, cfg, sha)
    result["cpu_seconds"] = time.process_time() - c0
    result["injected_examples"] = {str(r): c for r, c in sorted(hook.applied.items())}
    (folder / RESULT_FILE).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def finished(folder: Path, sha: str) -> dict[str, Any] | None:
    f = folder / RESULT_FILE
    if not f.is_file():
        return None
    try:
        res = json.loads(f.read_text())
    except json.JSONDecodeError:
        return None
    return res if res.get("config_sha256") == sha and res.get("version") == RESULT_VERSION else None


class _Progress(SilentReporter):
    """One line per round: the monitor's alarms as they come."""

    def __init__(self, console: Console, scenario: str, seed: int):
        self.console, self.tag = console, f"{scenario} seed {seed}"

    def round_start(self, round_num: int, rounds: int, sampled: Sequence[str]) -> None:
        self.rounds = rounds

    def round_end(self, row: dict[str, Any]) -> None:
        alarms = (row.get("monitor") or {}).get("alarms", [])
        names = ", ".join(sorted({a["stream"] for a in alarms})) or "-"
        self.console.print(
            f"  {self.tag}: round {row['round']}/{self.rounds}  train loss {row.get('train_loss', float('nan')):.3f}"
            f"  held-out {row.get('eval_loss_mean', float('nan')):.3f}  {row['timings']['round_s']:.0f}s  alarms: {names}",
            highlight=False,
        )


def safety_adapter(cfg: Config, console: Console) -> dict[str, Any]:
    """The cached safety-tuned starting adapter (built once by the alignment recipe, SFT on refusals of
    harmful requests and helpful answers to benign ones, monitor probe prompts excluded) and its measured
    refusal / over-refusal rates."""
    try:
        from openpfi.recipes.safety_adapter import SafetySettings, build_safety_adapter
    except ImportError:
        raise UserError(
            "scenarios with start = \"safety_adapter\" need openpfi.recipes.safety_adapter (the alignment "
            "issue's safety-tuned adapter), which this installation lacks; run the others with --only"
        ) from None
    m = cfg.monitor
    settings = SafetySettings(
        model=cfg.model.name,
        r=cfg.lora.r,
        alpha=cfg.lora.alpha,
        targets=tuple(cfg.lora.targets),
        probe_sizes={k: v for k, v in m.suite_sizes.items() if k in ("harmful", "benign")},
        probe_seed=m.probe_seed,
    )
    console.print("safety-tuned starting adapter: from the cache, or built once (~2 min, not in the estimate)",
                  highlight=False)
    t0 = time.perf_counter()
    path, sha, rates = build_safety_adapter(settings)
    base, tuned = rates.get("base", {}), rates.get("adapter", {})
    console.print(
        f"safety-tuned starting adapter {path} (sha256 {sha[:12]}, {time.perf_counter() - t0:.0f}s): refusal "
        f"{base.get('refusal_rate', float('nan')):.2f} -> {tuned.get('refusal_rate', float('nan')):.2f}, "
        f"over-refusal {base.get('over_refusal_rate', float('nan')):.2f} -> "
        f"{tuned.get('over_refusal_rate', float('nan')):.2f} (held-out prompts, likelihood judge)",
        highlight=False,
    )
    return {"path": str(path), "sha256": sha, "rates": rates}
