"""`openpfi bench round --clients N --clients-per-round K`: many clients, a sample per round.

Every chitchat sender can be a client (natural split with ``data.opening_turns`` and
``data.min_examples = 1``: 1,315 clients). The run is the demo's, ``ROUNDS`` rounds of K
sampled clients. Clients are tokenized when sampled and release their examples and personal
state after their round (``FederatedClient.release``), so the process's memory should follow
K, not N. Measured here:

- the process's resident memory, sampled every ``SAMPLE_S`` seconds from before the run is
  prepared to its end (peak and at each round's end), against the budget
  base model + K x adapter + 1 GiB;
- each round's phases, and its overhead outside forward and backward passes
  (``bench.round.round_split``).
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch

from openpfi.algorithms.state import nbytes
from openpfi.recipes import federated_sft
from openpfi.runfolder import RunFolder
from openpfi.strategies.round_result import RoundResult

ROUNDS = 2
SAMPLE_S = 0.05
EVERY_SENDER = ["data.opening_turns=true", "data.min_examples=1"]
"""A natural split that can take every chitchat sender (1,315) as a client."""


class PeakRSS:
    """The highest resident set size of this process while the block runs (a sampling thread)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _sizes(run: RunFolder, last: int) -> tuple[int, int]:
    """(bytes of the frozen base model as loaded, bytes of one adapter) from the run's manifest and checkpoint."""
    model = json.loads((run.path / "manifest.json").read_text())["model"]
    itemsize = torch.empty((), dtype=getattr(torch, model["dtype"])).element_size()
    return int(model["num_parameters"]) * itemsize, nbytes(run.load_checkpoint(last).adapter)


def scale_round_bench(make_config: Callable[[list[str]], Any], clients: int, per_round: int) -> dict[str, Any]:
    """Run ``ROUNDS`` rounds of ``per_round`` clients sampled among ``clients``; memory and timings."""
    cfg = make_config([*EVERY_SENDER, f"federation.clients_per_round={per_round}", f"federation.rounds={ROUNDS}"])
    proc = psutil.Process()
    at_round_end: list[float] = []

    def note_rss(result: RoundResult) -> None:
        at_round_end.append(float(proc.memory_info().rss))

    rss0 = proc.memory_info().rss
    with tempfile.TemporaryDirectory(prefix="openpfi-bench-scale-") as tmp, PeakRSS() as peak:
        run = federated_sft.start(cfg, Path(tmp) / "run", force=True, hooks=[note_rss])
        rows = RunFolder.open(run.path).read_metrics()
        base, adapter = _sizes(run, int(rows[-1]["round"]))
    budget = base + per_round * adapter + (1 << 30)
    return {
        "clients": clients,
        "clients_per_round": per_round,
        "rounds": ROUNDS,
        "rows": [
            {"round": r["round"], "sampled": len(r["sampled"]), "train_compute_s": r.get("train_compute_s", 0.0),
             **r["timings"]}
            for r in rows
        ],
        "memory": {
            "process_rss_before_bytes": float(rss0),
            "peak_rss_bytes": float(peak.peak),
            "rss_at_round_end_bytes": at_round_end,
            "base_model_bytes": float(base),
            "adapter_bytes": float(adapter),
            "budget_bytes": float(budget),
            "budget_all_clients_bytes": float(base + clients * adapter + (1 << 30)),
            "within_budget": float(peak.peak - rss0 <= budget),
        },
    }


def print_scale(result: dict[str, Any], console: Any, split: Callable[[dict[str, float]], dict[str, float]]) -> None:
    """The per-round table (phases, overhead outside forward/backward) and the memory line."""
    from rich.table import Table

    table = Table(title=f"bench round: {result['clients_per_round']} of {result['clients']} clients per round")
    for col in ("round", "train", "of which fwd+bwd", "evaluate", "monitor", "serialize", "overhead", "round s"):
        table.add_column(col, justify="right")
    for row in result["rows"]:
        s = split(row)
        table.add_row(str(row["round"]), *(f"{row[k]:.1f}" for k in ("train_s", "train_compute_s", "evaluate_s",
                      "monitor_s", "serialize_s")), f"{s['overhead_s']:.2f} ({s['overhead_share']:.1%})",
                      f"{row['round_s']:.1f}")
    console.print(table)
    m, gib = result["memory"], float(1 << 30)
    ends = ", ".join(f"{x / gib:.2f}" for x in m["rss_at_round_end_bytes"])
    console.print(
        f"memory: peak RSS {m['peak_rss_bytes'] / gib:.2f} GiB, {(m['peak_rss_bytes'] - m['process_rss_before_bytes']) / gib:.2f} "
        f"GiB above the process before the run ({m['process_rss_before_bytes'] / gib:.2f} GiB); at round ends {ends} GiB; "
        f"budget base {m['base_model_bytes'] / gib:.2f} GiB + {result['clients_per_round']} x "
        f"{m['adapter_bytes'] / 1024:.0f} KiB + 1 GiB = {m['budget_bytes'] / gib:.2f} GiB -> "
        f"{'within' if m['within_budget'] else 'OVER'} budget"
    )
