"""`openpfi bench round`: where a round's wall time goes, and memory with many clients.

1. A real round of the demo config (``examples/demo.toml`` defaults) on the
   bundled model with ``clients`` clients, timed by the in-process engine: train
   (of which forward+backward), aggregate, evaluate, monitor, serialization,
   and the rest ("overhead" = everything but forward and backward passes; see
   :func:`round_split`). With ``--engine flower`` a local Flower federation
   runs ``FLOWER_ROUNDS`` rounds of it too (``result["flower"]``): the last round
   serially, the first with its close overlapping the next round's training (the
   critical path); ``engine`` records the engine requested and ``timings_engine``
   the one that produced ``timings``.
2. Memory: the base model plus ``memory_clients`` simulated clients, each
   holding its data and a personal adapter, one of them training; peak RSS
   against the budget base model + N x adapter + 1 GB.

With ``clients_per_round`` below ``clients`` (e.g. every chitchat sender, 1,315, with 16
sampled per round) the bench runs that federation instead (``bench/round_scale.py``):
its rounds' phases and overhead, and its memory against base + K x adapter + 1 GB; with
``--engine flower`` the same federation of virtual clients on Flower's simulation runtime
(``bench/round_flower.py simulation_scale_bench``).
"""

from __future__ import annotations

import gc
import resource
import tempfile
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from openpfi.algorithms.state import clone, nbytes
from openpfi.assembly.clients import prepare
from openpfi.bench.common import write_json
from openpfi.bench.round_scale import ROUNDS as SCALE_ROUNDS
from openpfi.bench.round_scale import print_scale, scale_round_bench
from openpfi.config import load_config
from openpfi.errors import UserError
from openpfi.recipes import federated_sft
from openpfi.runfolder import RunFolder

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo.toml"
FLOWER_ROUNDS = 2
"""Rounds of the Flower half: round 1's close overlaps round 2's training (engines/flower/server_app.py),
so round 1 gives the critical path and round 2 (the last, closed at once) the serial round."""


def demo_config(model: str, clients: int, overrides: list[str]) -> Any:
    path = DEMO if DEMO.is_file() else None
    sets = [
        f"model.name={model!r}".replace("'", '"'),
        f"data.num_clients={clients}",
        f"federation.clients_per_round={clients}",
        "federation.rounds=1",
        *overrides,
    ]
    return load_config(path, sets)


def time_round(model: str, clients: int, overrides: list[str]) -> dict[str, float]:
    """Run one round in a temporary run folder; return its timings (seconds)."""
    cfg = demo_config(model, clients, overrides)
    with tempfile.TemporaryDirectory(prefix="openpfi-bench-round-") as tmp:
        run = federated_sft.start(cfg, Path(tmp) / "run", force=True)
        row = RunFolder.open(run.path).read_metrics()[-1]
    t = dict(row["timings"])
    t["train_compute_s"] = row.get("train_compute_s", 0.0)
    t["bytes_up"] = row.get("bytes_up", 0.0)
    t["bytes_down"] = row.get("bytes_down", 0.0)
    return t


def memory_with_clients(model: str, n: int) -> dict[str, float]:
    """Peak RSS with the base model and ``n`` clients holding personal adapters; one client trains."""
    cfg = demo_config(model, n, ["data.min_examples=10", "data.max_examples=60", "client.local_steps=2"])
    rss0 = psutil.Process().memory_info().rss
    prep = prepare(cfg)
    base_bytes = sum(p.numel() * p.element_size() for n_, p in prep.shared.model.named_parameters() if "lora_" not in n_)
    adapter = prep.shared.initial_state
    personal = [clone(adapter) for _ in prep.clients]  # one personal adapter per client
    prep.clients[0].fit(prep.shared, adapter, 1, 0)
    gc.collect()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rss = psutil.Process().memory_info().rss
    budget = base_bytes + n * nbytes(adapter) + (1 << 30)
    del personal, prep
    gc.collect()
    return {
        "clients": float(n),
        "process_rss_before_bytes": float(rss0),
        "rss_bytes": float(rss),
        "peak_rss_bytes": float(peak),
        "base_model_bytes": float(base_bytes),
        "adapter_bytes": float(nbytes(adapter)),
        "budget_bytes": float(budget),
        "within_budget": float(peak - rss0 <= budget),
    }


def round_split(timings: dict[str, float]) -> dict[str, float]:
    """Shares of a round's wall time ``round_s`` from the engine's timings (seconds).

    Forward+backward is ``train_compute_s + evaluate_s + monitor_s``; ``overhead_s`` is the
    rest of the round. ``monitor_share`` is ``monitor_s / round_s``.
    """
    round_s = timings["round_s"]
    if not round_s > 0:
        raise ValueError(f"round_s = {round_s} must be > 0")
    overhead = round_s - (timings["train_compute_s"] + timings["evaluate_s"] + timings["monitor_s"])
    return {
        "overhead_s": overhead,
        "overhead_share": overhead / round_s,
        "monitor_share": timings["monitor_s"] / round_s,
    }


def monitor_cost(timings: dict[str, float], clients: int) -> dict[str, float]:
    """The monitor's part of a round, serial (this in-process round) and on the critical path of a deployment.

    Serial: ``monitor_s / round_s`` (the clients' probing, ``client_monitor_s``, plus the server's scoring of
    the global model and its tests, the rest of ``monitor_s``). Critical path, estimated from the same
    timings for ``clients`` clients training, evaluating and probing in parallel: one client's share of the
    client phase, ``(train_s + evaluate_s + client_monitor_s) / clients``, then aggregation and
    serialization; the server's scoring overlaps the next round's client phase (the server is idle while
    clients train), so only what it takes beyond that phase is on the path.
    """
    client_mon = timings.get("client_monitor_s", 0.0)
    server_mon = max(timings["monitor_s"] - client_mon, 0.0)
    phase = (timings["train_s"] + timings["evaluate_s"] + client_mon) / clients
    beyond = max(server_mon - phase, 0.0)
    critical = phase + timings["aggregate_s"] + timings.get("serialize_s", 0.0) + beyond
    return {
        "client_monitor_s": client_mon,
        "server_monitor_s": server_mon,
        "monitor_share_serial": timings["monitor_s"] / timings["round_s"],
        "critical_path_s": critical,
        "monitor_share_critical_path": (client_mon / clients + beyond) / critical,
    }


def run_round_bench(out: Path, *, model: str, clients: int, memory_clients: int, engine: str, console: Console,
                    clients_per_round: int | None = None) -> dict[str, Any]:
    if engine not in ("inprocess", "flower"):
        raise UserError(f"--engine {engine!r}: choose inprocess or flower")
    if clients_per_round is not None and clients_per_round > clients:
        raise UserError(f"--clients-per-round {clients_per_round} exceeds --clients {clients}; lower it")
    if clients_per_round is not None and clients_per_round < clients:
        if engine == "flower":
            from openpfi.bench.round_flower import print_simulation_scale, simulation_scale_bench  # flwr, lazily

            console.print(f"bench round: {model}, {clients_per_round} of {clients} virtual clients per round, demo "
                          "config, Flower's simulation runtime")
            result = {"model": model, "engine": engine,
                      **simulation_scale_bench(model, clients, clients_per_round, SCALE_ROUNDS)}
            print_simulation_scale(result, console)
        else:
            console.print(f"bench round: {model}, {clients_per_round} of {clients} clients per round, demo config")
            scaled = scale_round_bench(lambda sets: demo_config(model, clients, sets), clients, clients_per_round)
            print_scale(scaled, console, round_split)
            result = {"model": model, "engine": engine, **scaled}
        write_json(out, result)
        console.print(f"wrote {out}")
        return result
    # memory first, so the process peak (ru_maxrss) is this measurement's and not the round's
    console.print(f"bench round: memory with {memory_clients} simulated clients")
    memory = memory_with_clients(model, memory_clients)
    console.print(f"bench round: {model}, {clients} clients, demo config, 1 round (inprocess engine timings)")
    t = time_round(model, clients, [])
    result: dict[str, Any] = {
        "model": model, "clients": clients, "engine": engine, "timings_engine": "inprocess", "timings": t,
    }
    result.update(round_split(t))
    result["monitor"] = monitor_cost(t, clients)
    round_s, overhead = t["round_s"], result["overhead_s"]
    if engine == "flower":
        console.print(f"bench round: {FLOWER_ROUNDS} rounds on a local Flower federation ({clients} nodes)")
        from openpfi.bench.round_flower import deployment_summary, flower_round_bench  # only flower imports flwr

        result["flower"] = flower_round_bench(model=model, clients=clients, rounds=FLOWER_ROUNDS)
        result.update(deployment_summary(round_s, result["flower"]))
    result["memory"] = memory

    table = Table(title=f"bench round ({clients} clients, 1 round, inprocess engine)")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for key in ("train_s", "train_compute_s", "aggregate_s", "evaluate_s", "monitor_s", "serialize_s"):
        table.add_row(key.removesuffix("_s"), f"{t[key]:.2f}", f"{t[key] / round_s:.1%}")
    table.add_row("overhead (all but forward/backward)", f"{overhead:.2f}", f"{overhead / round_s:.1%}")
    table.add_row("[bold]round", f"{round_s:.2f}", "100%")
    console.print(table)
    mc = result["monitor"]
    console.print(
        f"monitor: {mc['monitor_share_serial']:.1%} of this serial round (clients probing {mc['client_monitor_s']:.1f} s, "
        f"server scoring and tests {mc['server_monitor_s']:.1f} s); on the critical path of a deployment with "
        f"{clients} clients in parallel and the server's scoring overlapping the next round's training: "
        f"{mc['monitor_share_critical_path']:.1%} of {mc['critical_path_s']:.1f} s (estimated from these timings)"
    )
    if "flower" in result:
        console.print(
            f"flower deployment round {result['deployment_round_s']:.1f} s vs in-process {round_s:.1f} s: "
            f"{result['deployment_ratio']:.2f}x; startup {result['deployment_startup_s']:.1f} s; "
            f"per message {result['deployment_message_overhead_s']}"
        )
        if "deployment_round_critical_s" in result:
            console.print(
                f"flower round 1 on the critical path (its close, the server's scoring included, overlapping round 2's "
                f"training): {result['deployment_round_critical_s']:.1f} s = {result['deployment_critical_ratio']:.2f}x "
                f"in-process; round 2 waited {result['deployment_close_wait_s']:.1f} s for it"
            )
    m = result["memory"]
    gib = 1 << 30
    console.print(
        f"memory: peak RSS {m['peak_rss_bytes'] / gib:.2f} GiB with {memory_clients} clients, "
        f"{(m['peak_rss_bytes'] - m['process_rss_before_bytes']) / gib:.2f} GiB above the process before "
        f"(Python + torch, {m['process_rss_before_bytes'] / gib:.2f} GiB); budget "
        f"(base {m['base_model_bytes'] / gib:.2f} GiB + {memory_clients} x {m['adapter_bytes'] / 1024:.0f} KiB + 1 GiB) "
        f"= {m['budget_bytes'] / gib:.2f} GiB -> {'within' if m['within_budget'] else 'OVER'} budget"
    )
    write_json(out, result)
    console.print(f"wrote {out}")
    return result
