"""Start a run folder: the resolved config, the manifest and the first audit entry (every engine)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from openpfi.assembly.manifest import build_manifest
from openpfi.config import Config, dump_toml
from openpfi.data import ClientData, LoadResult
from openpfi.models.loader import ModelInfo
from openpfi.monitor import audit_sign
from openpfi.monitor.audit import AuditLog
from openpfi.runfolder import RunFolder


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
) -> tuple[Config, RunFolder]:
    """Create the run folder and write config.toml, manifest.json and the first audit entry.

    Every engine starts a run here; returns the config with ``output.dir`` set to ``out``.
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
        extra={"start_adapter": cfg.model.adapter or None, **(extra or {})},
    )
    run.write_json("manifest.json", manifest)
    start_audit(run, cfg).append(
        "config", {"config_sha256": hashlib.sha256(config_text.encode()).hexdigest(), "model": manifest["model"]}
    )
    return cfg, run
