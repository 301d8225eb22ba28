"""Flower's deployment and simulation runtimes: deploy local, deploy run-config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from openpfi.cli.common import OutOpt, SetOpt, deploy_app, finish_run, friendly, setup_env


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
    setup_env()
    from openpfi.assembly.compatibility import check_combinations
    from openpfi.config import load_config
    from openpfi.engines.flower.deploy import deploy_local as run_local

    cfg = load_config(config, set_ or [])
    check_combinations(cfg)
    target = Path(out) if out is not None else Path(cfg.output.dir)
    run_local(cfg, target, nodes=nodes, force=force, tls=tls, simulation=simulation, port=port, timeout=timeout, echo=typer.echo)
    finish_run(target)


@deploy_app.command("run-config")
@friendly
def deploy_run_config(
    config: Annotated[Path, typer.Argument(help="TOML config file.")],
    out: OutOpt = None,
    set_: SetOpt = None,
    state_dir: Annotated[str, typer.Option("--state-dir", help="Personal client state on the nodes.")] = "",
) -> None:
    """Print the run config for `flwr run APP LINK --run-config FILE.toml` (multi-machine runs)."""
    from openpfi.assembly.compatibility import check_combinations
    from openpfi.config import load_config
    from openpfi.engines.flower.settings import run_config_toml

    cfg = load_config(config, set_ or [])
    check_combinations(cfg)
    target = Path(out) if out is not None else Path(cfg.output.dir)
    typer.echo(run_config_toml(cfg, target.expanduser().resolve(), state_dir=state_dir), nl=False)


