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

import hashlib
import json
import statistics
import time
import tomllib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from openpfi.bench.common import write_json
from openpfi.bench.silent_inject import build_hook, make_encoder, probe_ids
from openpfi.bench.silent_scenarios import (
    POSITIVE_CONTROL_KINDS,
    SCENARIO_DIR,
    Profile,
    Scenario,
    load_scenarios,
    load_suite,
    merge,
    scenario_config,
)
from openpfi.bench.silent_score import (
    RunScore,
    ScenarioSummary,
    coverage,
    coverage_header,
    coverage_row,
    score_run,
    summarize,
)
from openpfi.config import Config, dump_toml
from openpfi.data import groups_are_public
from openpfi.errors import UserError
from openpfi.models.registry import relative_cost, resolve
from openpfi.monitor.probes import group_probe_filter
from openpfi.monitor.types import MODES

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo.toml"
RESULT_FILE = "result.json"
RESULT_VERSION = 1
SETUP_SECONDS = 5.0
"""Per-run fixed cost in the duration estimate (model load, client round-0 references, report)."""
FIRST_START_SECONDS = 20.0
"""Round 0 of the first run from each starting model (refusal-judge generations, the base
model's client suites), on top of one server scoring; later runs read it from the cache."""
SERVER_SECONDS_PER_ITEM = 0.066
"""The server scoring one public item on the global model once. Calibrated on the quick suite of
2026-11-30 (2-core machine, 256-token packed rows): the server's part of a round, 186 items, took
12.3 s (the monitor's 14.2 s less the clients' 1.9 s)."""
STEP_SECONDS = 0.75
"""One extra local step of an injected client (``steps_scale`` > 1): the 48-client adaptation run of
2026-11-30 (full profile) trained 96 steps in 71.5 s in round 1 and 192 in 143.6 s
in round 2 (batch 4, max length 64, 2-core machine)."""


# -- plan -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchPlan:
    profile_name: str
    profile: Profile
    base: dict[str, Any]
    scenarios: list[Scenario]
    seeds: int
    work: Path

    def runs(self) -> list[tuple[Scenario, int]]:
        """Seed-major: an interrupted suite has every scenario at the seeds it finished."""
        return [(s, seed) for seed in range(self.seeds) for s in self.scenarios]

    def folder(self, scenario: Scenario, seed: int) -> Path:
        return self.work / scenario.name / f"seed-{seed}"


def _demo_raw() -> dict[str, Any]:
    if not DEMO.is_file():
        return {}
    raw = tomllib.loads(DEMO.read_text(encoding="utf-8"))
    raw.pop("output", None)
    return raw


def make_plan(
    out: Path,
    quick: bool = False,
    seeds: int | None = None,
    scenarios_dir: Path | None = None,
    only: Sequence[str] = (),
    model: str | None = None,
) -> BenchPlan:
    """Validate every scenario file and the profile; nothing is run or written. ``model``
    replaces the profile's ``model.name`` in every run (and so in every config hash)."""
    directory = scenarios_dir or SCENARIO_DIR
    suite = load_suite(directory)
    name = "quick" if quick else "full"
    profile = suite.quick if quick else suite.full
    base = merge(_demo_raw(), profile.config)
    if model:
        resolve(model)  # a clear error for a model that is not on disk, before anything runs
        base = merge(base, {"model": {"name": model}})
    scenarios = load_scenarios(directory, base)
    wanted = list(only) or profile.scenarios
    if wanted:
        known = {s.name for s in scenarios}
        unknown = sorted(set(wanted) - known)
        if unknown:
            raise UserError(f"unknown scenario {', '.join(unknown)}; scenario files in {directory}: {', '.join(sorted(known))}")
        scenarios = [s for s in scenarios if s.name in wanted]
    if not profile.scale_clients:
        scenarios = [s.without_scaling() for s in scenarios]
    if profile.start_round is not None:
        scenarios = [s.with_start_round(profile.start_round) for s in scenarios]
        for s in scenarios:  # the onset must still fall within the profile's rounds
            scenario_config(s, base)
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds {seeds}: use at least 1 seed")
    return BenchPlan(name, profile, base, scenarios, seeds or profile.seeds, out.parent / f"{out.stem}.runs")


def run_config(plan: BenchPlan, scenario: Scenario, seed: int, adapter: str = "") -> Config:
    extra: dict[str, Any] = {"seed": seed, "monitor": {"enabled": True}}
    if adapter:
        extra["model"] = {"adapter": adapter}
    return scenario_config(scenario, plan.base, extra)


def expected_seconds(plan: BenchPlan, configs: Sequence[Config], done: Collection[int] = ()) -> float:
    """Per run (``configs`` in ``plan.runs()`` order): setup; round 0 (once per starting model and
    seed: later runs reuse it); the server scoring its public sample after every round; every
    sampled client each round (training, its monitor probes, evaluation); and the injected
    clients' extra local steps from onset on. Runs at the indices in ``done`` (finished earlier)
    cost nothing, and their round 0 is cached for later runs from the same start. The constants
    are SmolLM2-135M's; another bundled model scales the sum by its measured ``relative_cost``."""
    spc = plan.profile.seconds_per_client_round
    total = 0.0
    started: set[tuple[str, int]] = set()  # (starting adapter, seed): round 0 evaluated once, then cached
    for i, ((scenario, _), c) in enumerate(zip(plan.runs(), configs, strict=True)):
        rounds = c.federation.rounds
        items = sum(c.monitor.server_items.values()) + c.monitor.group_items * len(c.monitor.groups)
        server = SERVER_SECONDS_PER_ITEM * items if c.monitor.enabled else 0.0
        start = (c.model.adapter or scenario.spec.scenario.start, c.seed)
        if i in done:
            started.add(start)
            continue
        if start not in started:  # later runs from the same start read round 0 from the cache
            total += FIRST_START_SECONDS + server
        started.add(start)
        inj = scenario.injection
        injected_rounds = max(0, rounds - inj.start_round + 1) if inj.kind != "none" else 0
        steps = c.client.local_steps
        extra_steps = max(0, round(steps * inj.steps_scale) - steps)
        total += (SETUP_SECONDS + rounds * server + rounds * c.federation.clients_per_round * spc
                  + inj.count(c.data.num_clients) * injected_rounds * extra_steps * STEP_SECONDS)
    cost = relative_cost(configs[0].model.name) if configs else None
    return total * (cost or 1.0)


# -- one run ----------------------------------------------------------------------------------------


def _speed_note(model: str) -> str:
    cost = relative_cost(model)
    if cost is None:
        return " at SmolLM2-135M speed (a larger model takes longer)"
    return "" if cost == 1.0 else f" ({cost:g}x SmolLM2-135M's time, measured)"


def _config_sha(cfg: Config, scenario: Scenario) -> str:
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
    >= 1 = alarm; the shift it could see, monitor/power.py, None for a paired-test stream).
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


def _languages(cfg: Config) -> list[str]:
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
    sha = _config_sha(cfg, scenario)
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
        keep=group_probe_filter(_languages(cfg), cfg.monitor.group_items, cfg.monitor.probe_seed),
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


def _finished(folder: Path, sha: str) -> dict[str, Any] | None:
    f = folder / RESULT_FILE
    if not f.is_file():
        return None
    try:
        res = json.loads(f.read_text())
    except json.JSONDecodeError:
        return None
    return res if res.get("config_sha256") == sha and res.get("version") == RESULT_VERSION else None


class _Progress:
    """One line per round: the monitor's alarms as they come."""

    def __init__(self, console: Console, scenario: str, seed: int):
        self.console, self.tag = console, f"{scenario} seed {seed}"

    def round_start(self, round_num: int, rounds: int, sampled: Sequence[str]) -> None:
        self.rounds = rounds

    def client_start(self, round_num: int, client_id: str, index: int, count: int, steps: int) -> None:
        pass

    def step(self, step: int, total: int, loss: float, tokens_per_s: float) -> None:
        pass

    def client_end(self, client_id: str, scalars: dict[str, float]) -> None:
        pass

    def phase(self, name: str) -> None:
        pass

    def round_end(self, row: dict[str, Any]) -> None:
        alarms = (row.get("monitor") or {}).get("alarms", [])
        names = ", ".join(sorted({a["stream"] for a in alarms})) or "-"
        self.console.print(
            f"  {self.tag}: round {row['round']}/{self.rounds}  train loss {row.get('train_loss', float('nan')):.3f}"
            f"  held-out {row.get('eval_loss_mean', float('nan')):.3f}  {row['timings']['round_s']:.0f}s  alarms: {names}",
            highlight=False,
        )


# -- safety adapter ---------------------------------------------------------------------------------


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


# -- the suite --------------------------------------------------------------------------------------


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
    console.print(
        f"silent-failure benchmark ({plan.profile_name}): {len(plan.scenarios)} scenarios x {plan.seeds} seeds = "
        f"{len(configs)} runs on {configs[0].model.name}; expected duration ~{expected / 60:.0f} min"
        f"{_speed_note(configs[0].model.name)}"
        f" (runs in {plan.work})",
        highlight=False,
    )
    t_start = time.perf_counter()
    adapter: dict[str, Any] | None = None
    if any(s.spec.scenario.start == "safety_adapter" for s in plan.scenarios):
        adapter = safety_adapter(configs[0], console)

    def start_of(scenario: Scenario) -> str:
        return adapter["path"] if adapter and scenario.spec.scenario.start == "safety_adapter" else ""

    finished = [_finished(plan.folder(s, seed), _config_sha(run_config(plan, s, seed, start_of(s)), s))
                if resume else None for s, seed in plan.runs()]
    if resume:
        done_idx = {i for i, f in enumerate(finished) if f is not None}
        console.print(f"resuming: {len(done_idx)} of {len(configs)} runs finished earlier; the rest take "
                      f"~{expected_seconds(plan, configs, done_idx) / 60:.0f} min", highlight=False)
    results = []
    for (scenario, seed), done in zip(plan.runs(), finished, strict=True):
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
    rows = scenario_rows(plan, results)
    cov = suite_coverage(rows)
    controls = [r for r in rows if r["expect"] == "none"]
    table = markdown_table(rows)
    row = coverage_row(cov)
    payload = {
        "benchmark": "silent",
        "profile": plan.profile_name,
        "seeds": plan.seeds,
        "model": configs[0].model.name,
        "expected_seconds": expected,
        "seconds": time.perf_counter() - t_start,
        "scenarios": rows,
        "runs": results,
        "coverage": cov,
        "coverage_row": row,
        "false_alarms_total": sum(r["false_alarms"] for r in rows),
        "control_false_alarms": sum(r["false_alarms"] for r in controls),
        "epsilon_max": max((r["epsilon"] for r in rows), default=0.0),
        "safety_adapter": adapter,
        "targets": {
            "detected_within_rounds": 3,
            "controls_without_alarm": True,
            "epsilon_at_most": 8.0,
            "met": all(v == "direct" for v in cov.values())
            and sum(r["false_alarms"] for r in rows) == 0
            and max((r["epsilon"] for r in rows), default=0.0) <= 8.0,
        },
        "table_markdown": table,
    }
    write_json(out, payload)
    console.print(table, highlight=False, soft_wrap=True)
    console.print("\n" + coverage_header() + "\n" + row, highlight=False, soft_wrap=True)
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
