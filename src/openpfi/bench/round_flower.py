"""The Flower side of ``openpfi bench round --engine flower``: the same round on Flower.

``flower_round_bench`` runs the in-process benchmark's config (the demo config, one
round, ``clients`` clients) through ``openpfi deploy local`` and returns, per round,
the wall time split as the in-process engine splits it (train = send the global
adapter, train, collect; aggregate; evaluate), the SecAgg+ time, the bytes on the wire
(serialized Flower messages, both directions) next to the adapter payload the
in-process engine counts, and what Flower's process-per-message model costs: seconds
from a ClientApp process's start to its handler (``process_s``), to import torch,
transformers and peft (``import_s``) and to load data and model (``prepare_s``), and the
node worker's wait for one of the host's compute slots (``slot_wait_s``: the SuperNodes of
one host take turns for its cores). ``startup_s`` is everything before the first round
(SuperLink, SuperNodes, ServerApp start, waiting for and identifying the nodes).

    python -m openpfi.bench.round_flower --model tiny-random --clients 2 --secagg updates

``simulation_scale_bench`` runs a large federation of virtual clients on Flower's simulation
runtime (``bench round --engine flower --clients 1315 --clients-per-round 16``): every node is
identified once, a sample trains each round, and the simulation workers, which answer for many
virtual clients each, report their peak memory against base + one client's state + 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from openpfi.engines.flower.deploy import deploy_local


def _config(model: str, clients: int, rounds: int, secagg: str, overrides: list[str]) -> Any:
    from openpfi.bench.round import demo_config  # the in-process benchmark's work, exactly

    return demo_config(model, clients, [f"federation.rounds={rounds}", f"flower.secagg={secagg}", *overrides])


def _round_figures(row: dict[str, Any]) -> dict[str, Any]:
    t, f = row["timings"], row.get("flower", {})
    costs = list(f.get("clients", {}).values())

    def mean(key: str) -> float:
        vals = [c[key] for c in costs if key in c]
        return statistics.fmean(vals) if vals else 0.0

    return {
        "round": row["round"],
        "round_s": t["round_s"],
        "train_s": t["train_s"],
        "aggregate_s": t["aggregate_s"],
        "evaluate_s": t["evaluate_s"],
        "secagg_s": f.get("secagg_s", 0.0),
        "secagg_bytes_up": f.get("secagg_bytes_up", 0),
        "secagg_bytes_down": f.get("secagg_bytes_down", 0),
        "train_compute_s": row.get("train_compute_s", 0.0),
        "wire_bytes_up": f.get("wire_bytes_up", 0),
        "wire_bytes_down": f.get("wire_bytes_down", 0),
        "bytes_up": row.get("bytes_up", 0.0),
        "bytes_down": row.get("bytes_down", 0.0),
        **{f"{phase}_{part}_s": mean(f"{phase}_{part}_s") for phase in ("fit", "evaluate")
           for part in ("process", "channel", "slot_wait", "import", "prepare")},
        "previous_close_wait_s": t.get("previous_close_wait_s", 0.0),
        "previous_round_period_s": t.get("previous_round_period_s", 0.0),
        "failed": row["failed"],
    }


def _startup(row: dict[str, Any]) -> dict[str, Any]:
    """What the nodes reported while getting ready (first round's row): worker start, import, prepare, memory."""
    nodes = row.get("flower", {}).get("startup", {}).get("nodes", {})
    vals = list(nodes.values())

    def stat(key: str, fn: Any = statistics.fmean) -> float:
        xs = [v[key] for v in vals if key in v]
        return float(fn(xs)) if xs else 0.0

    return {
        "server_s": row.get("flower", {}).get("startup", {}).get("server_s", 0.0),
        "node_process_s": stat("flower_process_s"),
        "node_import_s": stat("flower_import_s"),
        "node_prepare_s": stat("flower_prepare_s"),
        "node_peak_rss_bytes_max": stat("flower_peak_rss_bytes", max),
        "node_budget_bytes_min": stat("flower_budget_bytes", min),
        "nodes_within_budget": all(v.get("flower_peak_rss_bytes", 0) <= v.get("flower_budget_bytes", 0) for v in vals),
    }


def _run(cfg: Any, simulation: bool) -> tuple[list[dict[str, Any]], float]:
    """``deploy local`` of ``cfg`` in a temporary folder: its metrics rows and wall seconds."""
    with tempfile.TemporaryDirectory(prefix="openpfi-bench-flower-") as tmp:
        t0 = time.perf_counter()
        run = deploy_local(cfg, Path(tmp) / "run", simulation=simulation, echo=lambda s: None)
        total = time.perf_counter() - t0
        return run.read_metrics(), total


def _startup_s(total_s: float, per_round: list[dict[str, Any]]) -> float:
    """Everything before round 1: a round's close may overlap the next round (server_app.py), so the rounds
    span their periods, then the last round."""
    return total_s - sum(r["previous_round_period_s"] for r in per_round[1:]) - per_round[-1]["round_s"]


def deployment_summary(inprocess_round_s: float, flower: dict[str, Any]) -> dict[str, Any]:
    """The top-level figures of ``bench round --engine flower``: the deployment round against the
    in-process round of the same config in the same run; startup and per-message overhead apart."""
    last = flower["per_round"][-1]
    per_message = {
        f"{phase}_{part}_s": last[f"{phase}_{part}_s"]
        for phase in ("fit", "evaluate") for part in ("process", "channel", "slot_wait")
    }
    out = {
        "inprocess_round_s": inprocess_round_s,
        "deployment_round_s": flower["round_s"],
        "deployment_ratio": flower["round_s"] / inprocess_round_s,
        "deployment_startup_s": flower["startup_s"],
        "deployment_message_overhead_s": per_message,
        "deployment_nodes_within_budget": flower["startup"]["nodes_within_budget"],
    }
    if len(flower["per_round"]) > 1:  # round t-1 on the critical path: its period, then what round t waited for its close
        critical = last["previous_round_period_s"] + last["previous_close_wait_s"]
        out.update({
            "deployment_round_critical_s": critical,
            "deployment_critical_ratio": critical / inprocess_round_s,
            "deployment_close_wait_s": last["previous_close_wait_s"],
        })
    return out


def flower_round_bench(
    *,
    model: str,
    clients: int,
    runtime: str = "deployment",
    secagg: str = "off",
    rounds: int = 1,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run the benchmark round(s) on a local Flower federation; figures per round."""
    if runtime not in ("deployment", "simulation"):
        raise ValueError(f"runtime {runtime!r}: choose deployment or simulation")
    rows, total = _run(_config(model, clients, rounds, secagg, list(overrides or [])), runtime == "simulation")
    per_round = [_round_figures(r) for r in rows]
    last = per_round[-1]
    return {
        "runtime": runtime,
        "secagg": secagg,
        "nodes": clients,
        "rounds": rounds,
        "total_s": total,
        "startup_s": _startup_s(total, per_round),
        "round_s": last["round_s"],
        "wire_bytes_up": last["wire_bytes_up"],
        "wire_bytes_down": last["wire_bytes_down"],
        "bytes_up": last["bytes_up"],
        "bytes_down": last["bytes_down"],
        "startup": _startup(rows[0]),
        "per_round": per_round,
    }


def simulation_scale_bench(model: str, clients: int, per_round: int, rounds: int) -> dict[str, Any]:
    """``clients`` virtual clients on Flower's simulation runtime, ``per_round`` sampled per round."""
    from openpfi.bench.round_scale import EVERY_SENDER

    overrides = [*EVERY_SENDER, f"federation.clients_per_round={per_round}"]
    rows, total = _run(_config(model, clients, rounds, "off", overrides), simulation=True)
    return {"runtime": "simulation", "clients": clients, "clients_per_round": per_round, "rounds": rounds,
            **simulation_summary(rows, total)}


def simulation_summary(rows: list[dict[str, Any]], total_s: float) -> dict[str, Any]:
    """A simulation run's rows as the scale bench reports them: per round its wall time, the clients'
    forward/backward seconds (summed over the workers that ran in parallel) and per-message costs;
    startup (everything before round 1, the nodes' identification included); memory as the simulation
    workers reported it with every message they answered (``node_service.memory``: the process's peak
    against the base model + that client's state + 1 GiB)."""
    per_round = [_round_figures(r) | {"sampled": len(r["sampled"]), "monitor_s": r["timings"].get("monitor_s", 0.0)}
                 for r in rows]
    nodes = rows[0].get("flower", {}).get("startup", {}).get("nodes", {})
    reports = [*nodes.values(), *(c for r in rows for c in r.get("flower", {}).get("clients", {}).values())]
    peaks = [float(v) for c in reports for k, v in c.items() if k.endswith("peak_rss_bytes")]
    budgets = [float(v) for c in reports for k, v in c.items() if k.endswith("budget_bytes")]
    return {
        "total_s": total_s,
        "startup_s": _startup_s(total_s, per_round),
        "identified_nodes": len(nodes),
        "per_round": per_round,
        "memory": {
            "worker_peak_rss_bytes_max": max(peaks, default=0.0),
            "worker_budget_bytes_min": min(budgets, default=0.0),
            "reports": len(peaks),
            "within_budget": bool(peaks) and max(peaks) <= min(budgets),
        },
    }


def print_simulation_scale(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"bench round on Flower's simulation runtime: {result['clients_per_round']} of "
                        f"{result['clients']} virtual clients per round")
    for col in ("round", "sampled", "fit phase s", "clients' fwd+bwd s", "fit process s", "evaluate s", "round s"):
        table.add_column(col, justify="right")
    for r in result["per_round"]:
        table.add_row(str(r["round"]), str(r["sampled"]), f"{r['train_s']:.1f}", f"{r['train_compute_s']:.1f}",
                      f"{r['fit_process_s']:.2f}", f"{r['evaluate_s']:.1f}", f"{r['round_s']:.1f}")
    console.print(table)
    m, gib = result["memory"], float(1 << 30)
    console.print(
        f"startup {result['startup_s']:.1f} s ({result['identified_nodes']} nodes identified); simulation workers' "
        f"peak RSS {m['worker_peak_rss_bytes_max'] / gib:.2f} GiB against a budget of {m['worker_budget_bytes_min'] / gib:.2f} "
        f"GiB (base + one client's state + 1 GiB) over {m['reports']} reports -> "
        f"{'within' if m['within_budget'] else 'OVER'} budget"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-random")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--runtime", default="deployment", choices=("deployment", "simulation"))
    p.add_argument("--secagg", default="off", choices=("off", "monitor", "updates"))
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    result = flower_round_bench(
        model=a.model, clients=a.clients, runtime=a.runtime, secagg=a.secagg, rounds=a.rounds, overrides=a.overrides
    )
    text = json.dumps(result, indent=2)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
