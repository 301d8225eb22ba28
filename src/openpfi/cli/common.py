"""What every command shares: the typer app and its groups, consoles, the bad-input wrapper, progress."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from openpfi.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Federated personalization and alignment of open-weight LLMs, with a silent-failure monitor.")
audit_app = typer.Typer(no_args_is_help=True, help="Check the hash-chained audit log of a run.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: print a table and write JSON (never timed tests).")
app.add_typer(audit_app, name="audit")
app.add_typer(bench_app, name="bench")
deploy_app = typer.Typer(no_args_is_help=True, help="Run on Flower's deployment or simulation runtime.")
app.add_typer(deploy_app, name="deploy")
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value (repeatable).")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Run folder (default: output.dir of the config).")]


def friendly(fn: F) -> F:
    """Bad input: one line on stderr, exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; continue later with `openpfi resume RUN_FOLDER`")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def setup_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def finish_run(run_path: Path) -> None:
    """The closing table: the clients' own figures from their stores (the simulation's view)."""
    from openpfi.client.store import client_figures
    from openpfi.runfolder import RunFolder
    from openpfi.ui import results_table, shared_figures

    run = RunFolder.open(run_path)
    rows = run.read_metrics()
    if rows:
        store = run.clients_dir
        figures = client_figures(store, up_to_round=int(rows[-1]["round"]))
        source = f"from the clients' own stores in {store}; the server never sees them"
        if not figures and shared_figures(rows):
            figures, source = shared_figures(rows), "shared with the server (privacy.share_client_metrics = true)"
        console.print(results_table(rows, figures, source))
    for line in trust_lines(run_path):
        console.print(line, highlight=False)
    if (run_path / "report.json").is_file():  # a monitored run: what its monitor could and could not see
        import json

        from openpfi.monitor.reporting.summary import print_summary

        console.print(print_summary(json.loads((run_path / "report.json").read_text())))
        console.print(f"monitoring report: {run_path / 'report.html'}")
    console.print(f"run folder: [bold]{run_path}[/]")


def trust_lines(run_path: Path) -> list[str]:
    """The privacy spent on the updates (and with the monitor) and the audit head to keep elsewhere."""
    import json

    out = []
    try:
        data = json.loads((run_path / "privacy.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    both = data.get("combined") if isinstance(data, dict) else None
    if isinstance(both, dict):
        monitor = both.get("epsilon_monitor")
        text = f"privacy: updates epsilon {both.get('epsilon_updates', float('nan')):.3g}"
        if monitor is not None:
            text += f", monitor epsilon {monitor:.3g}, together {both.get('epsilon_total', float('nan')):.3g}"
        out.append(text + f" at delta {both.get('delta', float('nan')):.3g}")
    try:
        head = json.loads((run_path / "audit.head").read_text(encoding="utf-8"))
        out.append(f"audit head: {head['hash']} ({head['count']} entries; keep it outside the run folder and check "
                   f"with `openpfi audit verify {run_path} --head HASH`)")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return out



class _Null:
    def __enter__(self) -> Any:
        from openpfi.engines.inprocess import SilentReporter

        return SilentReporter()

    def __exit__(self, *exc: object) -> None:
        return None


def progress(quiet: bool) -> Any:
    if quiet:
        return _Null()
    from openpfi.ui import RichReporter

    return RichReporter()

