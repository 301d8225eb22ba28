"""Round bookkeeping shared by every engine: the round result, hooks, checkpoint, metrics.jsonl.

An engine (in-process, Flower) runs a round its own way, then hands what the
server saw to :func:`round_result` and :func:`close_round`, so every engine writes
the same run folder: one ``metrics.jsonl`` row and one ``checkpoints/round-N``
per round, in this layout::

    {"round": r, "sampled": [...], "failed": [...], <fit metrics>, <eval metrics (means)>,
     "timings": {"train_s", "aggregate_s", "evaluate_s", "monitor_s", "serialize_s", "round_s"},
     <keys added by hooks or by the engine>}

No per-client figure is in it: the held-out loss reaches the server as a sum over clients
(``EvalSum``), and the distribution of client utility only through the monitor's DP report.
With ``privacy.share_client_metrics = true`` (research simulations) the row also holds
``"clients": {id: {"eval_loss", "eval_ppl", ["personal_loss"], "train_loss", "tokens_per_s"}}``
and the worst client and spread computed from them (:func:`shared_client_figures`).

Monitor reports: the engine passes their SUM to the hooks in the ``RoundResult``
(``MonitorSum``: plain on the in-process engine, the SecAgg+ sum on Flower), never in the
row. With a ``validate_monitor`` check (the in-process stand-in for secure aggregation with
input validation) a malformed report is left out of the sum and listed in
``RoundResult.rejected``. ``timings["client_monitor_s"]`` (the clients' probing time) is
counted in ``monitor_s``.

Updates that never reached the aggregate are listed by the engine in ``row["dropped"]`` (the
client raised, timed out or did not reply) and ``row["rejected"]`` (the server's validation,
strategies/screening.py), each as ``{"client_id", "reason", "detail"}``. ``close_round`` writes
each of them to the audit log (kind ``rejected_update``), then one ``round`` entry with the
SHA-256 of the new global adapter, and puts the log's head (entry count and hash) in the
round's checkpoint (``state.json`` ``audit_head``): the anchor of monitor/audit.py.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from openpfi.client.messages import ClientUpdate, EvalResult
from openpfi.models.loader import sha256_state
from openpfi.monitor.audit import AuditLog
from openpfi.runfolder import Checkpoint, RunFolder
from openpfi.strategies.round_result import MonitorSum, RejectedReport, RoundHook, RoundResult


class _Server(Protocol):
    params: Any
    opt_state: Any


class _Reporter(Protocol):
    def phase(self, name: str) -> None: ...
    def round_end(self, row: dict[str, Any]) -> None: ...


def monitor_sum(updates: Sequence[ClientUpdate]) -> MonitorSum | None:
    """Sum of the clients' monitor reports and how many clients sent one (None when none did)."""
    vectors = [u.monitor.values for u in updates if u.monitor is not None]
    if not vectors:
        return None
    return MonitorSum(np.sum(vectors, axis=0), len(vectors))


def shared_client_figures(updates: Sequence[ClientUpdate], evals: Sequence[EvalResult]) -> dict[str, Any]:
    """Per-client figures in the clear (only with ``privacy.share_client_metrics = true``)."""
    by_id = {u.client_id: u for u in updates}
    clients: dict[str, dict[str, float]] = {}
    for e in evals:
        u = by_id.get(e.client_id)
        clients[e.client_id] = {
            "eval_loss": e.loss,
            "eval_ppl": e.perplexity,
            **({"personal_loss": e.personal_loss} if e.personal_loss is not None else {}),
            "train_loss": u.scalars.get("train_loss", float("nan")) if u else float("nan"),
            "tokens_per_s": u.scalars.get("tokens_per_s", float("nan")) if u else float("nan"),
        }
    out: dict[str, Any] = {"clients": clients}
    for key, values in (("eval_loss", [e.loss for e in evals]),
                        ("personal_loss", [e.personal_loss for e in evals if e.personal_loss is not None])):
        if values:
            out[f"{key}_worst"] = float(np.max(values))
            out[f"{key}_spread"] = float(statistics.pstdev(values)) if len(values) > 1 else 0.0
    return out


def round_result(
    round_num: int,
    sampled: Sequence[str],
    failed: Sequence[str],
    fit_metrics: dict[str, float],
    eval_metrics: dict[str, float],
    updates: Sequence[ClientUpdate],
    evals: Sequence[EvalResult] = (),
    validate_monitor: Callable[[np.ndarray], str | None] | None = None,
    share_client_metrics: bool = False,
) -> RoundResult:
    """The round's result and metrics row (before hooks and timings).

    ``validate_monitor(vector)`` returns why a monitor report must be rejected, or None;
    ``evals`` are only read with ``share_client_metrics``.
    """
    row: dict[str, Any] = {"round": round_num, "sampled": list(sampled), "failed": list(failed),
                           **fit_metrics, **eval_metrics}
    if share_client_metrics:
        row.update(shared_client_figures(updates, evals))
    rejected: list[RejectedReport] = []
    if validate_monitor is not None:
        for u in updates:
            reason = None if u.monitor is None else validate_monitor(u.monitor.values)
            if reason is not None:
                rejected.append(RejectedReport(u.client_id, reason))
        bad = {x.client_id for x in rejected}
        updates = [u for u in updates if u.client_id not in bad]
    return RoundResult(round_num, list(sampled), list(failed), row, monitor_sum(updates), rejected)


def audit_round(run: RunFolder, round_num: int, params: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Audit entries of a round's lost updates and its new global adapter; the log's head after them."""
    audit = AuditLog(run.path / "audit.jsonl")
    for record in [*row.get("dropped", []), *row.get("rejected", [])]:
        audit.append("rejected_update", {"round": round_num, **record})
    audit.append("round", {
        "round": round_num,
        "adapter_sha256": sha256_state(dict(params)),
        "valid_updates": row.get("clients_answered"),
        "update_epsilon_total": row.get("update_epsilon_total"),
    })
    return {"count": audit.count, "hash": audit.last_hash}


def close_round(
    run: RunFolder,
    server: _Server,
    result: RoundResult,
    *,
    seed: int,
    hooks: Sequence[RoundHook],
    reporter: _Reporter,
    timings: dict[str, float],
    started: float,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the hooks, checkpoint the server state, append the row to metrics.jsonl; returns the row.

    ``timings`` holds the engine's phases (train_s, aggregate_s, evaluate_s, ...);
    ``started`` is the ``time.perf_counter()`` at the start of the round; ``meta`` is saved
    with the checkpoint next to the seed and the row (e.g. ``{"server": server.meta()}``).
    """
    row = result.row
    t_hooks = time.perf_counter()
    for hook in hooks:
        hook(result)
    reporter.phase("checkpoint")
    t_ckpt = time.perf_counter()
    row["timings"] = {**timings, "monitor_s": t_ckpt - t_hooks + timings.get("client_monitor_s", 0.0)}
    head = audit_round(run, result.round, server.params, row)
    ckpt_meta = {"seed": seed, "metrics": row, **(meta or {}), "audit_head": head}
    run.save_checkpoint(Checkpoint(result.round, server.params, server.opt_state, ckpt_meta))
    row["timings"]["serialize_s"] = time.perf_counter() - t_ckpt
    row["timings"]["round_s"] = time.perf_counter() - started
    run.append_metrics(row)
    reporter.round_end(row)
    return row
