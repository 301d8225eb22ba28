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
    auth: Annotated[
        bool, typer.Option("--auth", help="Admit only SuperNodes whose key is registered with the SuperLink (implies --tls).")
    ] = False,
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
    run_local(
        cfg, target, nodes=nodes, force=force, tls=tls, auth=auth, simulation=simulation, port=port, timeout=timeout,
        echo=typer.echo,
    )
    finish_run(target)


@deploy_app.command("run-config")
@friendly
def deploy_run_config(
    config: Annotated[Path, typer.Argument(help="TOML config file (with --resume: a run folder).")],
    out: OutOpt = None,
    set_: SetOpt = None,
    state_dir: Annotated[str, typer.Option("--state-dir", help="Personal client state on the nodes.")] = "",
    resume: Annotated[bool, typer.Option("--resume", help="CONFIG is a Flower run folder: continue it.")] = False,
) -> None:
    """Print the run config for `flwr run APP LINK --run-config FILE.toml` (multi-machine runs).

    With --resume, CONFIG is a run folder on this (the SuperLink) host; the run config continues
    it from its last complete round with its own config."""
    from openpfi.assembly.compatibility import check_combinations
    from openpfi.config import load_config
    from openpfi.engines.flower.settings import run_config_toml
    from openpfi.errors import UserError

    if resume:
        if set_ or out is not None:
            raise UserError("--resume keeps the run folder's own config and folder: drop --set and --out")
        if not (config / "config.toml").is_file():
            raise UserError(f"--resume needs a run folder; {config} has no config.toml")
        folder = config.expanduser().resolve()
        typer.echo(run_config_toml(load_config(folder / "config.toml"), folder, state_dir=state_dir, resume=True), nl=False)
        return
    cfg = load_config(config, set_ or [])
    check_combinations(cfg)
    target = Path(out) if out is not None else Path(cfg.output.dir)
    typer.echo(run_config_toml(cfg, target.expanduser().resolve(), state_dir=state_dir), nl=False)




@deploy_app.command("supernode")
@friendly
def deploy_supernode(
    superlink: Annotated[str, typer.Option("--superlink", help="The SuperLink's HOST:PORT.")],
    partition_id: Annotated[int, typer.Option("--partition-id", help="This host's client, 0 .. N-1.")],
    num_partitions: Annotated[int, typer.Option("--num-partitions", min=1, help="N = the run's data.num_clients.")],
    root_certificates: Annotated[
        Path | None, typer.Option("--root-certificates", help="The CA that signed the SuperLink's certificate.")
    ] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="No TLS (trials on a private network only).")] = False,
    auth_key: Annotated[
        Path | None, typer.Option("--auth-key", help="This node's private key (its .pub registered with the SuperLink).")
    ] = None,
    state_dir: Annotated[str, typer.Option("--state-dir", help="Personal client state on this host.")] = "",
    data_path: Annotated[str, typer.Option("--data-path", help="This host's JSONL file with its client's rows only.")] = "",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="The SuperNode's local runtime API port.")] = 9094,
) -> None:
    """Check this host's SuperNode inputs (partition, key, CA, the SuperLink reachable), then run Flower's SuperNode."""
    from openpfi.engines.flower.settings import NodeIdentity
    from openpfi.engines.flower.supernode import SuperNodeArgs, run_supernode
    from openpfi.errors import UserError

    if (root_certificates is None) != insecure:
        raise UserError("pass --root-certificates CA.pem (TLS) or --insecure (no TLS), one of the two")
    identity = NodeIdentity(partition_id, num_partitions, state_dir, data_path)
    code = run_supernode(SuperNodeArgs(superlink, identity, root_certificates, auth_key, port))
    raise typer.Exit(0 if code in (0, 130) or code < 0 else code)
