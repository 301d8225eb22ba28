"""Terminal display: live progress of a run and the closing results table (rich)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class RichReporter:
    """Live display: round, client, step, loss, tokens/s."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._rounds: Any = None
        self._client: Any = None
        self._round = 0
        self._client_id = ""

    def __enter__(self) -> RichReporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def round_start(self, round_num: int, rounds: int, sampled: Sequence[str]) -> None:
        self._round = round_num
        if self._rounds is None:
            self._rounds = self.progress.add_task("rounds", total=rounds, completed=round_num - 1, info="")
        self.progress.update(self._rounds, info=f"round {round_num}/{rounds}: {len(sampled)} clients")

    def client_start(self, round_num: int, client_id: str, index: int, count: int, steps: int) -> None:
        self._client_id = client_id
        desc = f"r{round_num} client {index + 1}/{count}"
        if self._client is None:
            self._client = self.progress.add_task(desc, total=steps, info=client_id)
        else:
            self.progress.reset(self._client, total=steps, description=desc, info=client_id)

    def step(self, step: int, total: int, loss: float, tokens_per_s: float) -> None:
        if self._client is not None:
            info = f"{self._client_id}  loss {loss:.3f}  {tokens_per_s:,.0f} tok/s"
            self.progress.update(self._client, completed=step, info=info)

    def client_end(self, client_id: str, scalars: dict[str, float]) -> None:
        pass

    def phase(self, name: str) -> None:
        if self._client is not None:
            self.progress.update(self._client, info=f"{name}...")

    def round_end(self, row: dict[str, Any]) -> None:
        if self._rounds is not None:
            self.progress.advance(self._rounds)
        mean = row.get("eval_loss_mean", float("nan"))
        self.console.print(
            f"round {row['round']}: train loss {row.get('train_loss', float('nan')):.3f}  "
            f"held-out loss mean {mean:.3f}  "
            f"({row.get('timings', {}).get('round_s', 0):.1f}s)"
        )


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.3f}"
    return str(x)


Figures = dict[str, dict[int, dict[str, float]]]
"""Client id -> round -> the client's own figures (client/store.py ``client_figures``)."""


def shared_figures(rows: list[dict[str, Any]]) -> Figures:
    """The per-client figures a run shared with the server (``privacy.share_client_metrics``)."""
    out: Figures = {}
    for r in rows:
        for cid, c in r.get("clients", {}).items():
            out.setdefault(cid, {})[int(r["round"])] = c
    return out


def results_table(rows: list[dict[str, Any]], figures: Figures, source: str = "") -> Table:
    """The simulation's view: each client's own held-out figures after the last round (``figures``,
    from the clients' stores; the server never has them), with its first-round figure, under the
    server's federation mean and the worst client and spread among them."""
    last = rows[-1]
    r_last = int(last["round"])
    latest = {cid: f[r_last] for cid, f in figures.items() if "eval_loss" in f.get(r_last, {})}
    first = {cid: next(f[r]["eval_loss"] for r in sorted(f) if "eval_loss" in f[r]) for cid, f in figures.items()
             if cid in latest}
    has_personal = any("personal_loss" in c for c in latest.values())
    rag = [k for k in RAG_COLUMNS if any(k in c for c in latest.values())]
    title = f"Simulation view: each client's own held-out results after round {r_last}"
    table = Table(title=title, caption=source or None)
    table.add_column("client")
    table.add_column("first eval loss", justify="right")
    table.add_column("eval loss", justify="right")
    table.add_column("perplexity", justify="right")
    if has_personal:
        table.add_column("personal loss", justify="right")
    for key in rag:
        table.add_column(RAG_COLUMNS[key], justify="right")
    table.add_column("train loss", justify="right")
    table.add_column("tok/s", justify="right")
    for cid, c in sorted(latest.items()):
        cells = [cid, _fmt(first.get(cid)), _fmt(c["eval_loss"]), f"{c.get('eval_ppl', float('nan')):.1f}"]
        if has_personal:
            cells.append(_fmt(c.get("personal_loss", float("nan"))))
        cells += [_fmt(c.get(key, float("nan"))) for key in rag]
        cells += [_fmt(c.get("train_loss", float("nan"))), f"{c.get('tokens_per_s', float('nan')):,.0f}"]
        table.add_row(*cells)
    table.add_section()
    for label, key in (("mean (server)", "mean"), ("worst client", "worst"), ("spread (sd)", "spread")):
        cells = [f"[bold]{label}", "", _summary(last, latest, "eval_loss", key), ""]
        if has_personal:
            cells.append(_summary(last, latest, "personal_loss", key))
        cells += [_rag_summary(latest, k, key) for k in rag]
        cells += ["", ""]
        table.add_row(*cells)
    return table


RAG_COLUMNS = {"rag_loss": "loss + retrieval", "exact_match": "EM", "rag_exact_match": "EM + retrieval"}
"""rag.evaluate: the client's own model (personal where it has one) with its retrieved passages in the
prompt, beside its loss without them (personal loss, else eval loss; client/retrieval_eval.py)."""


def _rag_summary(latest: dict[str, dict[str, float]], metric: str, stat: str) -> str:
    """Mean over the clients' own figures (the server has no retrieval figure); worst = highest loss, lowest EM."""
    values = [c[metric] for c in latest.values() if metric in c and not math.isnan(c[metric])]
    if not values:
        return ""
    if stat == "mean":
        return _fmt(statistics.fmean(values))
    if stat == "worst":
        return _fmt(min(values) if "exact" in metric else max(values))
    return _fmt(statistics.pstdev(values))


def _summary(row: dict[str, Any], latest: dict[str, dict[str, float]], metric: str, stat: str) -> str:
    if stat == "mean":
        return _fmt(row.get(f"{metric}_mean", float("nan")))
    values = [c[metric] for c in latest.values() if metric in c and not math.isnan(c[metric])]
    if not values:
        return "nan"
    return _fmt(max(values) if stat == "worst" else statistics.pstdev(values))
