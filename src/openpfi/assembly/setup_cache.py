"""A content-addressed cache of the monitor's round-0 server evaluation.

Round 0 scores the base and the starting model on the public probes and checks the refusal
judge against generated answers: about a minute on the bundled model, and the same for every
run that starts from the same model, adapter and probes (the silent benchmark's scenarios;
repeated runs of one config). The result is a pure function of what the key hashes: the
model's weights (sha256 of the file and the compute dtype), the base and starting adapter
states, the probe suites' hashes, the monitor settings that enter the evaluation and the
openpfi version. It is kept as JSON (no pickle) under ``<cache>/monitor-setup/<key>.json``;
an unreadable entry is recomputed and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from openpfi import __version__
from openpfi.models.loader import sha256_state
from openpfi.models.registry import cache_dir
from openpfi.monitor.audit import atomic_write_text

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def setup_key(model: Mapping[str, Any], base_state: Mapping[str, Any], start_state: Mapping[str, Any],
              suites: Mapping[str, str], settings: Mapping[str, Any]) -> str:
    """sha256 over everything the round-0 evaluation depends on (``suites``: name -> sha256)."""
    parts = {
        "version": [__version__, CACHE_VERSION],
        "model": dict(model),
        "base": sha256_state(dict(base_state)),
        "start": sha256_state(dict(start_state)),
        "suites": dict(sorted(suites.items())),
        "settings": dict(sorted(settings.items())),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cached_setup(key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()``, or its earlier result for the same ``key``."""
    path = cache_dir() / "monitor-setup" / f"{key}.json"
    if path.is_file():
        try:
            out = json.loads(path.read_text())
            log.info("monitor round 0: reusing the evaluation cached in %s", path)
            return out
        except (OSError, ValueError):
            log.warning("monitor round-0 cache entry %s is unreadable; recomputing it", path)
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(out))
    return out
