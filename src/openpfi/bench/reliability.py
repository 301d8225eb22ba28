"""`openpfi bench reliability`: faulty clients, crashes at random moments, hostile input.

Three parts, on tiny-random (the machinery is what is measured, not the model):

(b) crash recovery (bench/reliability_crash.py): N runs killed with SIGKILL at uniformly random
    moments, each resumed with ``openpfi resume``: resumed and bit-identical counts. Runs first,
    while this process has done no torch work (its runs are forked from it);
(a) faults (bench/reliability_faults.py): 30 % of the clients faulty every round for 20 rounds
    (raise, hang past client.timeout_s, NaN, wrong shape, x1e6 norm): rounds completed, updates
    lost by reason, and whether the final adapter equals a clean run without those updates;
(c) hostile input (bench/reliability_fuzz.py): hypothesis cases over the config parser, --set,
    the JSONL loader, the run-folder files read on resume and update validation: cases,
    clean refusals, tracebacks, hangs.

``--quick``: 10 fault rounds, 10 crashes, 60 cases per fuzz target (a few minutes); the full
campaign: 20 rounds, 50 crashes, 400 cases per target. The JSON's top level holds
``fault_rounds_planned``, ``fault_rounds_completed``, ``rejected_by_reason``, ``resumes_tried``,
``resumes_bit_identical``, ``fuzz_cases``, ``fuzz_tracebacks`` and ``fuzz_hangs``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from openpfi.bench.common import write_json
from openpfi.bench.reliability_faults import TIMEOUT_S


@dataclass(frozen=True)
class ReliabilityPlan:
    fault_rounds: int
    crashes: int
    fuzz_per_target: int
    fault_clients: int = 10
    fault_timeout_s: float = TIMEOUT_S
    """client.timeout_s of the fault runs (a hanging client sleeps 3 x this)."""
    crash_sets: tuple[str, ...] = ()
    """--set overrides of the crash runs, after their own (bench/reliability_crash.py SETS)."""


FULL = ReliabilityPlan(fault_rounds=20, crashes=50, fuzz_per_target=400)
QUICK = ReliabilityPlan(fault_rounds=10, crashes=10, fuzz_per_target=60)


def _fuzz_base(folder: Path) -> Path:
    """A small run folder resumable from round 2 (DP on the updates and int8, so every file is there)."""
    from openpfi.config import load_config
    from openpfi.recipes import federated_sft

    cfg = load_config(None, [
        "model.name=tiny-random", "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=3",
        "client.local_steps=1", "client.max_length=32", "client.batch_size=2", "data.min_examples=10",
        "data.max_examples=20", "monitor.enabled=false", "federation.compression=int8",
        "privacy.update_clip=1.0", "privacy.update_noise_multiplier=1.0", "federation.strategy=fedadam",
    ])
    run = federated_sft.start(cfg, folder / "base", force=True)
    shutil.rmtree(run.path / "checkpoints" / "round-3")
    return run.path


def run_reliability_bench(out: Path, quick: bool = False, console: Console | None = None,
                          plan: ReliabilityPlan | None = None, crash_process: str = "fork") -> dict[str, Any]:
    console = console or Console()
    plan = plan or (QUICK if quick else FULL)
    from openpfi.bench.reliability_crash import crash_trials
    from openpfi.bench.reliability_faults import run_faults
    from openpfi.bench.reliability_fuzz import run_fuzz

    t0 = time.perf_counter()
    result: dict[str, Any] = {"bench": "reliability", "quick": quick, "plan": plan.__dict__}
    with tempfile.TemporaryDirectory(prefix="openpfi-reliability-") as tmp:
        root = Path(tmp)
        if plan.crashes:
            console.print(f"crash recovery: {plan.crashes} runs killed at random moments, then resumed ...")
            (root / "crash.toml").write_text("# every key from the defaults and --set\n")
            result.update(crash_trials(root / "crash", root / "crash.toml", plan.crashes, how=crash_process,
                                       extra=plan.crash_sets))
        else:
            result.update(resumes_tried=0, resumes_bit_identical=0)
        console.print(f"faults: {plan.fault_rounds} rounds, 30% of {plan.fault_clients} clients faulty each round ...")
        result.update(run_faults(root / "faults", plan.fault_rounds, plan.fault_clients,
                                 timeout_s=plan.fault_timeout_s))
        console.print(f"hostile input: {plan.fuzz_per_target} cases per target ...")
        tally = run_fuzz(_fuzz_base(root / "fuzz"), plan.fuzz_per_target)
    result.update(
        fuzz_cases=sum(tally.cases.values()),
        fuzz_cases_by_target=tally.cases,
        fuzz_refused_by_target=tally.refused,
        fuzz_tracebacks=len(tally.tracebacks),
        fuzz_traceback_examples=tally.tracebacks[:5],
        fuzz_hangs=len(tally.hangs),
        fuzz_violations=len(tally.violations),
        fuzz_violation_examples=tally.violations[:5],
        seconds=time.perf_counter() - t0,
    )
    write_json(out, result)
    console.print(summary_table(result))
    console.print(f"wrote {out}")
    return result


def summary_table(r: dict[str, Any]) -> Table:
    t = Table(title="bench reliability")
    t.add_column("part")
    t.add_column("result")
    reasons = ", ".join(f"{k} {v}" for k, v in r.get("rejected_by_reason", {}).items()) or "none"
    t.add_row("faults", f"{r['fault_rounds_completed']}/{r['fault_rounds_planned']} rounds completed; "
              f"{r.get('faults_caught', 0)}/{sum(r.get('faults_injected', {}).values())} faults caught ({reasons}); "
              f"final adapter equals the clean run: {r.get('final_adapter_equals_clean')}")
    t.add_row("crash recovery", f"{r['resumes_bit_identical']}/{r['resumes_tried']} resumed bit-identical "
              f"({r.get('resumes_completed', 0)} resumed)")
    t.add_row("hostile input", f"{r['fuzz_cases']} cases: {r['fuzz_tracebacks']} tracebacks, {r['fuzz_hangs']} hangs, "
              f"{r['fuzz_violations']} broken invariants")
    return t
