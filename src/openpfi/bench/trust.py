"""`openpfi bench robust` and `openpfi bench compress`: robust aggregation under attack; loss against bytes.

Both run the demo federation (examples/demo.toml: SmolLM2-135M-Instruct, 8 chitchat clients, all in
every round, 3 rounds) with ``client.local_steps = 3`` (``--quick``: tiny-random, 2 rounds, 1 step),
and read the held-out loss of the global model after the last round (``eval_loss_mean``: the mean
over the clients' own held-out data) and the bytes each round uploads.

- robust: 2 of the 8 clients attack every round, sending ``scaled`` updates (x 10) or
  ``sign_flip`` ones (x -1); each aggregator (mean, median, trimmed_mean with trim 0.25, krum and
  multi_krum with f = 2) runs clean and under each attack, next to the clean FedAvg run.
  Both attacks stay below ``federation.max_update_norm``: they reach the aggregator, which is
  what is measured. The attack is client-side simulation (a ``before_round`` hook).
- compress: ``federation.compression`` none / fp16 / int8 / topk (10 % and 1 %), with error
  feedback; held-out loss against bytes up per round, plotted (``<out>.png``).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from openpfi.bench.common import write_json
from openpfi.config import load_config
from openpfi.recipes import federated_sft

ATTACKS = {"none": 1.0, "scaled": 10.0, "sign_flip": -1.0}
ATTACKERS = 2
AGGREGATORS = {
    "mean": (),
    "median": (),
    "trimmed_mean": ("federation.trim_fraction=0.25",),
    "krum": ("federation.byzantine_clients=2",),
    "multi_krum": ("federation.byzantine_clients=2",),
}
COMPRESSIONS = {
    "none": (),
    "fp16": ("federation.compression=fp16",),
    "int8": ("federation.compression=int8",),
    "topk-10%": ("federation.compression=topk", "federation.topk_fraction=0.1"),
    "topk-1%": ("federation.compression=topk", "federation.topk_fraction=0.01"),
}


def demo_sets(quick: bool, model: str | None = None) -> list[str]:
    sets = ["monitor.enabled=false", "client.max_eval_examples=16", f"client.local_steps={1 if quick else 3}",
            f"federation.rounds={2 if quick else 3}", f"federation.eval_every={2 if quick else 3}"]
    if quick:
        sets += ["model.name=tiny-random", "client.max_length=48", "client.batch_size=2"]
    elif model:
        sets.append(f"model.name={model}")
    return sets


def _attack(original: Any, factor: float, *args: Any, **kwargs: Any) -> Any:
    update = original(*args, **kwargs)
    update.delta = {k: v * factor for k, v in update.delta.items()}
    return update


def attackers(factor: float, count: int = ATTACKERS) -> Any:
    """A client-side hook: the first ``count`` clients (sorted ids) scale their updates by ``factor``."""
    def before_round(round_num: int, clients: list[Any]) -> None:
        for c in sorted(clients, key=lambda c: c.client_id)[:count]:
            c.fit = functools.partial(_attack, type(c).fit.__get__(c), factor)

    return before_round


def _run(config: Path, sets: list[str], folder: Path, hooks: list[Any]) -> dict[str, Any]:
    cfg = load_config(config, sets)
    t0 = time.perf_counter()
    run = federated_sft.start(cfg, folder, force=True, before_round=hooks)
    rows = run.read_metrics()
    return {
        "eval_loss": rows[-1].get("eval_loss_mean"),
        "bytes_up_per_round": sum(r.get("bytes_up", 0.0) for r in rows) / len(rows),
        "rejected": sum(len(r.get("rejected", [])) for r in rows),
        "seconds": time.perf_counter() - t0,
        "sets": sets,
    }


def run_robust_bench(out: Path, config: Path, quick: bool = False, console: Console | None = None,
                     model: str | None = None) -> dict[str, Any]:
    console = console or Console()
    base = demo_sets(quick, model)
    runs = out.parent / f"{out.stem}.runs"
    results: dict[str, dict[str, Any]] = {}
    for attack, factor in ATTACKS.items():
        results[attack] = {}
        for name, extra in AGGREGATORS.items():
            console.print(f"robust: {attack} / {name} ...")
            hooks = [] if attack == "none" else [attackers(factor)]
            sets = [*base, f"federation.aggregator={name}", *extra]
            results[attack][name] = _run(config, sets, runs / attack / name, hooks)
    clean = results["none"]["mean"]["eval_loss"]
    payload = {"bench": "robust", "quick": quick, "attackers": ATTACKERS, "attacks": ATTACKS,
               "clean_fedavg_loss": clean, "results": results}
    write_json(out, payload)
    t = Table(title=f"Held-out loss after the last round, {ATTACKERS} of 8 clients attacking (clean FedAvg {clean:.4f})")
    t.add_column("aggregator")
    for attack in ATTACKS:
        t.add_column(attack, justify="right")
    for name in AGGREGATORS:
        t.add_row(name, *(f"{results[a][name]['eval_loss']:.4f}" for a in ATTACKS))
    console.print(t)
    return payload


def run_compress_bench(out: Path, config: Path, quick: bool = False, console: Console | None = None,
                       model: str | None = None) -> dict[str, Any]:
    console = console or Console()
    base = demo_sets(quick, model)
    runs = out.parent / f"{out.stem}.runs"
    results = {}
    for name, extra in COMPRESSIONS.items():
        console.print(f"compress: {name} ...")
        results[name] = _run(config, [*base, *extra], runs / name, [])
    payload = {"bench": "compress", "quick": quick, "results": results}
    write_json(out, payload)
    plot_compression(results, out.with_suffix(".png"))
    t = Table(title="Held-out loss against bytes up per round (error feedback on)")
    for col in ("compression", "bytes up / round", "vs none", "held-out loss"):
        t.add_column(col, justify="left" if col == "compression" else "right")
    dense = results["none"]["bytes_up_per_round"]
    for name, r in results.items():
        t.add_row(name, f"{r['bytes_up_per_round']:.0f}", f"{r['bytes_up_per_round'] / dense:.3f}", f"{r['eval_loss']:.4f}")
    console.print(t)
    console.print(f"wrote {out} and {out.with_suffix('.png')}")
    return payload


def plot_compression(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, r in results.items():
        ax.scatter(r["bytes_up_per_round"], r["eval_loss"], s=50, zorder=3)
        ax.annotate(name, (r["bytes_up_per_round"], r["eval_loss"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xscale("log")
    ax.set_xlabel("bytes up per round (all clients)")
    ax.set_ylabel("held-out loss after the last round")
    ax.set_title("federation.compression on the demo federation")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
