"""A Flower run continued from its last complete round after its ServerApp died.

The run folder holds everything the server needs (config.toml, the checkpoint of every
complete round with the server optimizer state, metrics.jsonl, the audit chain, the
monitor's state); the nodes hold their personal state in their state folders, versioned
by round. A resumed run is a new Flower run (run config ``resume = true``, ``out-dir`` the
folder) on the same SuperLink and SuperNodes: it reads the folder's own config, checks it
before anything is written, then restores the server as ``recipes.federated_sft.resume``
does in-process, and asks the nodes for the rounds after the last complete one (each node
reloads the personal state of that round: ``node_service.NodeService._restore``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openpfi.assembly.run_start import reopen, rewind_metrics
from openpfi.config import Config
from openpfi.errors import UserError
from openpfi.runfolder import RunFolder


def _same(a: Config, b: Config) -> bool:
    def without_dir(c: Config) -> dict[str, Any]:
        d = c.model_dump(mode="json")
        d["output"].pop("dir", None)
        return d

    return without_dir(a) == without_dir(b)


def resume_point(out: Path, given: Config) -> tuple[RunFolder, Config, int, str]:
    """(run folder, its config, last complete round, run key) of a Flower run to continue.

    ``given``: the config the run config carries, which every node applies."""
    if not (out / "config.toml").is_file():
        raise UserError(f"{out} is not a run folder (no config.toml); pass the folder the run wrote with out-dir")
    engine = (json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}).get("engine", {})
    if engine.get("name") != "flower":
        raise UserError(f"{out} was written by the in-process engine; continue it with `openpfi resume {out}`")
    run, cfg, last = reopen(out)
    if not _same(given, cfg):  # the nodes read the run config's copy: it must be the folder's
        raise UserError(
            f"the run config's openpfi-config differs from {out / 'config.toml'}; a resumed run keeps its own "
            f"config: pass the run config `openpfi deploy run-config --resume {out}` writes"
        )
    return run, cfg, last, str(engine.get("run_key", ""))


def resume_server(run: RunFolder, server: Any, last: int, start: Any) -> None:
    """The server state after round ``last`` (the start state when no round completed); metrics.jsonl
    cut to the complete rounds and the resume audited (``assembly.run_start.rewind_metrics``)."""
    if last:
        ckpt = run.load_checkpoint(last)
        server.init(ckpt.adapter, ckpt.server_state, ckpt.meta.get("server"))
    else:
        server.init(start)
    rewind_metrics(run, last)
