"""Pick the recipe a config asks for and wire the monitor into it."""

from __future__ import annotations

from pathlib import Path

from openpfi.config import Config
from openpfi.engines.inprocess import Reporter
from openpfi.recipes import federated_sft
from openpfi.runfolder import RunFolder


def start_job(cfg: Config, out: Path, force: bool, reporter: Reporter) -> RunFolder:
    return federated_sft.start(cfg, out, force, reporter)


def resume_job(run_dir: Path, reporter: Reporter) -> RunFolder:
    return federated_sft.resume(run_dir, reporter)
