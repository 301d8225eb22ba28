"""Faulty clients over many rounds: every fault is caught, and the result equals a clean run without them.

Each round ``share`` of the clients (chosen per round, seeded) misbehave, the kinds taken in turn:

=========== ======================================================================
``raise``   the client's fit raises
``hang``    the client sleeps past ``client.timeout_s`` before training
``nan``     the update carries a NaN
``shape``   one tensor of the update has an extra row
``norm``    the update is scaled by 1e6
=========== ======================================================================

The faults are client-side simulation (a ``before_round`` hook swaps those clients' ``fit`` for
the round); the server sees only what arrives. The clean run takes the same rounds with the
same clients silent (they answer nothing), so its final adapter is the aggregate of exactly
the updates the faulty run should keep.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openpfi.config import Config, load_config
from openpfi.recipes import federated_sft
from openpfi.runfolder import RunFolder

FAULTS = ("raise", "hang", "nan", "shape", "norm")
TIMEOUT_S = 5.0


def fault_config(rounds: int, clients: int, seed: int = 0, timeout_s: float = TIMEOUT_S) -> Config:
    return load_config(None, [
        f"seed={seed}", "model.name=tiny-random", "data.source=chitchat", f"data.num_clients={clients}",
        f"federation.clients_per_round={clients}", f"federation.rounds={rounds}", "client.local_steps=2",
        "client.max_length=48", "client.batch_size=2", "data.min_examples=10", "data.max_examples=30",
        "monitor.enabled=false", f"client.timeout_s={timeout_s}", "client.max_eval_examples=4",
    ])


def plan_faults(client_ids: list[str], rounds: int, share: float, seed: int) -> dict[int, dict[str, str]]:
    """Round -> {client id: fault kind}: ``round(share * n)`` clients a round, kinds in turn."""
    k = max(1, round(share * len(client_ids)))
    plan: dict[int, dict[str, str]] = {}
    turn = 0
    for r in range(1, rounds + 1):
        rng = np.random.default_rng([seed, r, 24])
        chosen = sorted(rng.choice(len(client_ids), size=k, replace=False).tolist())
        plan[r] = {}
        for i in chosen:
            plan[r][client_ids[i]] = FAULTS[turn % len(FAULTS)]
            turn += 1
    return plan


class ClientSilent(RuntimeError):
    """The clean run's stand-in for a faulty client: it answers nothing this round."""


def _faulty_fit(original: Any, kind: str, hang_s: float, *args: Any, **kwargs: Any) -> Any:
    if kind == "silent":
        raise ClientSilent("sits this round out (clean run)")
    if kind == "raise":
        raise RuntimeError("injected fault: the client crashed")
    if kind == "hang":
        time.sleep(hang_s)
    update = original(*args, **kwargs)
    name = sorted(update.delta)[0]
    t = update.delta[name]
    if kind == "nan":
        bad = t.clone()
        bad.view(-1)[0] = float("nan")
        update.delta = {**update.delta, name: bad}
    elif kind == "shape":
        update.delta = {**update.delta, name: torch.zeros((t.shape[0] + 1, *t.shape[1:]), dtype=t.dtype)}
    elif kind == "norm":
        update.delta = {k: v * 1e6 for k, v in update.delta.items()}
    return update


def injector(plan: dict[int, dict[str, str]], clean: bool, hang_s: float = 3 * TIMEOUT_S) -> Any:
    def before_round(round_num: int, clients: list[Any]) -> None:
        for c in clients:
            c.__dict__.pop("fit", None)  # back to the class's own fit
            kind = plan.get(round_num, {}).get(c.client_id)
            if kind is not None:
                c.fit = functools.partial(_faulty_fit, type(c).fit.__get__(c), "silent" if clean else kind, hang_s)

    return before_round


def _final_adapter(run: RunFolder, rounds: int) -> dict[str, torch.Tensor] | None:
    """The global adapter of the last round, as the server saved it (None when the run did not get there)."""
    return run.load_checkpoint(rounds).adapter if rounds in run.completed_rounds() else None


def _same(a: dict[str, torch.Tensor] | None, b: dict[str, torch.Tensor] | None) -> bool:
    return a is not None and b is not None and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run_faults(folder: Path, rounds: int, clients: int = 10, share: float = 0.3, seed: int = 0,
               timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    cfg = fault_config(rounds, clients, seed, timeout_s)
    from openpfi.assembly.clients import load_clients

    ids = [c.client_id for c in load_clients(cfg)[1]]
    plan = plan_faults(ids, rounds, share, seed)
    t0 = time.perf_counter()
    error = None
    logging.getLogger("openpfi.engines.inprocess").setLevel(logging.ERROR)  # every lost update is in the rows
    try:
        faulty = federated_sft.start(cfg, folder / "faulty", force=True, before_round=[injector(plan, False, 3 * timeout_s)])
    except Exception as err:  # the campaign reports a run that did not finish, it does not stop
        error = f"{type(err).__name__}: {err}"
        faulty = RunFolder(folder / "faulty")
    seconds = time.perf_counter() - t0
    clean = federated_sft.start(cfg, folder / "clean", force=True, before_round=[injector(plan, True)])
    rows = faulty.read_metrics()
    reasons: Counter[str] = Counter()
    caught = 0
    for row in rows:
        lost = {x["client_id"]: x["reason"] for x in [*row.get("dropped", []), *row.get("rejected", [])]}
        reasons.update(lost.values())
        caught += sum(1 for cid in plan[int(row["round"])] if cid in lost)
    injected = Counter(kind for r in plan.values() for kind in r.values())
    final = _final_adapter(faulty, rounds)
    return {
        "fault_rounds_planned": rounds,
        "fault_rounds_completed": len(rows),
        "fault_clients": clients,
        "fault_share": share,
        "faults_injected": dict(sorted(injected.items())),
        "faults_caught": caught,
        "rejected_by_reason": dict(sorted(reasons.items())),
        "final_adapter_equals_clean": _same(final, _final_adapter(clean, rounds)),
        "fault_run_seconds": seconds,
        "fault_run_error": error,
    }
