"""Pick the recipe a config asks for and wire the monitor into it."""

from __future__ import annotations

from pathlib import Path

from openpfi.assembly.monitor_plan import plan_monitor
from openpfi.assembly.trust import check_trust
from openpfi.config import Config, load_config
from openpfi.engines.inprocess import Reporter
from openpfi.recipes import federated_sft
from openpfi.runfolder import RunFolder


def _is_alignment(cfg: Config) -> bool:
    return cfg.alignment.method != "none"


def start_job(cfg: Config, out: Path, force: bool, reporter: Reporter) -> RunFolder:
    plan = plan_monitor(cfg)  # bad probe files or an unmeetable privacy budget fail before any folder is written
    check_trust(cfg)  # an unreachable update epsilon or a bad signing key, likewise
    if _is_alignment(cfg):
        from openpfi.recipes import federated_align

        return federated_align.start(cfg, out, force, reporter, monitor=plan)
    return federated_sft.start(cfg, out, force, reporter, monitor=plan)


def resume_job(run_dir: Path, reporter: Reporter) -> RunFolder:
    cfg_file = run_dir / "config.toml"
    plan = plan_monitor(load_config(cfg_file)) if cfg_file.is_file() else None
    if cfg_file.is_file() and _is_alignment(load_config(cfg_file)):
        from openpfi.recipes import federated_align

        return federated_align.resume(run_dir, reporter, monitor=plan)
    return federated_sft.resume(run_dir, reporter, monitor=plan)
