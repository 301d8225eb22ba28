"""Terminal display: live progress of a run and the closing results table (rich)."""

from __future__ import annotations

import math
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
        worst = row.get("eval_loss_worst", float("nan"))
        self.console.print(
            f"round {row['round']}: train loss {row.get('train_loss', float('nan')):.3f}  "
            f"held-out loss mean {mean:.3f} worst {worst:.3f}  "
            f"({row.get('timings', {}).get('round_s', 0):.1f}s)"
        )


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.3f}"
    return str(x)


def results_table(rows: list[dict[str, Any]]) -> Table:
    """Per-client results of the last round with each client's first-round figure, plus summary rows."""
    last = rows[-1]
    first_seen: dict[str, float] = {}
    for r in rows:
        for cid, c in r.get("clients", {}).items():
            first_seen.setdefault(cid, c["eval_loss"])
    has_personal = any("personal_loss" in c for c in last.get("clients", {}).values())
    table = Table(title=f"Per-client held-out results after round {last['round']}")
    table.add_column("client")
    table.add_column("first eval loss", justify="right")
    table.add_column("eval loss", justify="right")
    table.add_column("perplexity", justify="right")
    if has_personal:
        table.add_column("personal loss", justify="right")
    table.add_column("train loss", justify="right")
    table.add_column("tok/s", justify="right")
    for cid, c in sorted(last.get("clients", {}).items()):
        cells = [cid, _fmt(first_seen.get(cid)), _fmt(c["eval_loss"]), f"{c['eval_ppl']:.1f}"]
        if has_personal:
            cells.append(_fmt(c.get("personal_loss", float("nan"))))
        cells += [_fmt(c["train_loss"]), f"{c['tokens_per_s']:,.0f}"]
        table.add_row(*cells)
    table.add_section()
    for label, key in (("mean", "eval_loss_mean"), ("worst client", "eval_loss_worst"), ("spread (sd)", "eval_loss_spread")):
        cells = [f"[bold]{label}", "", _fmt(last.get(key, float("nan"))), ""]
        if has_personal:
            cells.append(_fmt(last.get(key.replace("eval_loss", "personal_loss"), float("nan"))))
        cells += ["", ""]
        table.add_row(*cells)
    return table
