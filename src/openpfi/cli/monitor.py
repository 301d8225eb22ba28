"""The monitor's own commands: `openpfi monitor plan`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from openpfi.cli.common import SetOpt, app, console, friendly, setup_env

monitor_app = typer.Typer(no_args_is_help=True, help="The silent-failure monitor.")
app.add_typer(monitor_app, name="monitor")


def plan_table(result: dict[str, Any]) -> Any:
    """One row per mode: its verdict, the smallest change it would detect, what would fix it."""
    from rich.table import Table
    from rich.text import Text

    from openpfi.monitor.reporting.summary import VERDICT_STYLE, can_see

    modes = result["modes"]
    watching = sum(m["verdict"] == "watching" for m in modes.values())
    t = Table(title=f"monitor plan: {watching} / {len(modes)} modes watching — {result['clients_per_round']} clients "
                    f"per round, {result['rounds']} rounds, epsilon {result['epsilon']:.3g}, server items a round "
                    + ", ".join(f"{k} {v}" for k, v in sorted(result["server_items_per_round"].items())))
    t.add_column("mode", no_wrap=True)
    t.add_column("verdict", no_wrap=True)
    t.add_column("smallest change it would detect", overflow="fold", max_width=90)
    for mode, v in modes.items():
        t.add_row(mode, Text(v["verdict"], style=VERDICT_STYLE.get(v["verdict"], "")), can_see(v))
    return t


@monitor_app.command("plan")
@friendly
def plan(
    config: Annotated[Path, typer.Argument(help="TOML config file.")],
    set_: SetOpt = None,
) -> None:
    """Without training: each mode's verdict for this config and the smallest change of each it would detect."""
    setup_env()
    from openpfi.assembly.monitor_forecast import forecast
    from openpfi.assembly.monitor_plan import plan_monitor
    from openpfi.config import load_config
    from openpfi.errors import UserError

    cfg = load_config(config, set_ or [])
    monitor = plan_monitor(cfg)
    if monitor is None:
        raise UserError("monitor.enabled = false: there is no monitor to plan; set monitor.enabled = true")
    console.print(plan_table(forecast(monitor)))
