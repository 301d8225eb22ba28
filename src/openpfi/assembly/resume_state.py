"""Everything ``openpfi resume`` reads from a run folder before it trains, checked in one place.

The config, the completed checkpoints, the metrics rows, the audit log and the ledgers are
read and validated here, before any model is loaded: a damaged or edited file is one
``UserError`` naming it (``bench reliability`` fuzzes exactly this function).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openpfi.assembly.run_start import reopen
from openpfi.config import Config
from openpfi.errors import UserError
from openpfi.monitor.audit import verify
from openpfi.monitor.update_ledger import UpdateLedger
from openpfi.runfolder import Checkpoint, RunFolder


@dataclass
class ResumeState:
    run: RunFolder
    cfg: Config
    done: list[int]
    last: int
    checkpoint: Checkpoint | None

    @property
    def server_meta(self) -> dict[str, Any] | None:
        return self.checkpoint.meta.get("server") if self.checkpoint is not None else None


def read_resume_state(path: Path) -> ResumeState:
    run, cfg, last = reopen(path)
    done = run.completed_rounds()
    ckpt = run.load_checkpoint(last) if last else None
    if ckpt is not None:
        server = ckpt.meta.get("server", {})
        if not isinstance(server, dict):
            raise UserError(f"{path}/checkpoints/round-{last}/state.json: 'server' is not an object; restore it")
        if server.get("update_privacy"):
            UpdateLedger.from_dict(server["update_privacy"])  # replayed: an edited ledger fails here
    run.read_metrics()
    if (run.path / "audit.jsonl").is_file():
        res = verify(run.path)
        if not res.ok and "newline" not in (res.problem or ""):  # a torn last append is repaired on open
            raise UserError(f"{run.path}/audit.jsonl does not verify ({res.problem}); restore it before resuming")
    return ResumeState(run, cfg, done, last, ckpt)
