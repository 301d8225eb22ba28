"""Start a run folder (the resolved config, the manifest, the first audit entry) and reopen one to
resume; give in-process clients their stores in the client store next to it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from openpfi.assembly.manifest import build_manifest
from openpfi.client.store import ClientStore
from openpfi.config import Config, dump_toml, load_config
from openpfi.data import ClientData, LoadResult
from openpfi.errors import UserError
from openpfi.models.loader import ModelInfo
from openpfi.monitor import audit_sign
from openpfi.monitor.audit import AuditLog
from openpfi.runfolder import RunFolder, client_store_dir
from openpfi.runfolder.adapter import AdapterLayout


def start_audit(run: RunFolder, cfg: Config) -> AuditLog:
    """The run's audit log, signed from its first entry when ``output.audit_signing_key`` is set."""
    if cfg.output.audit_signing_key:
        audit_sign.enable(run.path, cfg.output.audit_signing_key)
    return AuditLog(run.path / "audit.jsonl")


def new_run(
    cfg: Config,
    out: Path,
    force: bool,
    model: ModelInfo,
    loaded_data: LoadResult,
    data: list[ClientData],
    extra: dict[str, Any] | None = None,
    audit: dict[str, Any] | None = None,
    *,
    start: Mapping[str, torch.Tensor],
    layout: AdapterLayout,
) -> tuple[Config, RunFolder]:
    """Create the run folder and write config.toml, manifest.json, ``start/`` (the starting
    adapter ``start`` as a peft folder of ``layout``) and the first audit entry.

    Every engine starts a run here; returns the config with ``output.dir`` set to ``out``.
    ``extra``: more manifest keys; ``audit``: more keys of the audit's config entry.
    """
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": str(out)})})
    run = RunFolder.create(out, force)
    config_text = dump_toml(cfg)
    run.write_config(config_text)
    manifest = build_manifest(
        seed=cfg.seed,
        model=model,
        source_files=loaded_data.source_files,
        clients=data,
        skipped_rows=loaded_data.skipped_rows,
        extra={"start_adapter": cfg.model.adapter or None, **run_privacy(cfg, out), **(extra or {})},
    )
    run.write_json("manifest.json", manifest)
    run.write_start(dict(start), layout)
    start_audit(run, cfg).append(
        "config", {"config_sha256": hashlib.sha256(config_text.encode()).hexdigest(), "model": manifest["model"],
                   **(audit or {})}
    )
    return cfg, run


def reopen(path: Path) -> tuple[RunFolder, Config, int]:
    """An existing run folder, its config and its last complete round (0 = none).

    Refuses a run that already finished all its rounds.
    """
    run = RunFolder.open(path)
    cfg = load_config(run.config_file)
    done = run.completed_rounds()
    last = done[-1] if done else 0
    if last >= cfg.federation.rounds:
        raise UserError(f"{path} already finished all {cfg.federation.rounds} rounds; nothing to resume")
    return run, cfg, last


def ensure_start(run: RunFolder, start: Mapping[str, torch.Tensor], layout: AdapterLayout) -> None:
    """Resume of a run folder written before ``start/`` existed: write it (checkpoints need it)."""
    if not run.has_start():
        run.write_start(dict(start), layout)


def rewind_metrics(run: RunFolder, last: int) -> None:
    """metrics.jsonl cut back to round ``last``, rows lost between a checkpoint and its append restored
    from the checkpoints, and the resume written to the audit log."""
    run.truncate_metrics(last)
    have = {int(r["round"]) for r in run.read_metrics()}
    for r in run.completed_rounds():
        if r not in have:  # killed between checkpoint and metrics append: the checkpoint holds the row
            row = run.load_checkpoint(r).meta.get("metrics")
            if row:
                run.append_metrics(row)
    AuditLog(run.path / "audit.jsonl").append("action", {"resume_from_round": last})


def run_privacy(cfg: Config, out: Path) -> dict[str, Any]:
    """The manifest's record of where client state lives and what of it the server sees."""
    return {"client_store": client_store_dir(out).name,
            "privacy": {"share_client_metrics": cfg.privacy.share_client_metrics}}


def attach_client_stores(clients: Iterable[Any], run: RunFolder, resume_from: int = 0) -> None:
    """Give each in-process client its folder in the run's client store (``<run>.clients/<id>``).

    A resumed run (``resume_from`` > 0) needs the store its rounds wrote: without it personal
    state and monitor noise would silently start over.
    """
    root = run.clients_dir
    if resume_from and not root.is_dir():
        raise UserError(
            f"cannot resume {run.path}: its client store {root} (personal state, monitor secrets) is missing; "
            "move it back next to the run folder, or start a new run"
        )
    for c in clients:
        c.store = ClientStore(root / c.client_id)
