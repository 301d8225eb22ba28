"""Distributed differential privacy of the monitor reports: the client-side mechanism (clip, noise,
the server's report check; ``mechanism.py``) and the ledger of what the releases spent, with the
noise planned for a budget (``ledger.py``)."""

from __future__ import annotations

from openpfi.monitor.privacy.ledger import LEDGER_FILE, LedgerEntry, PrivacyLedger, plan_budget
from openpfi.monitor.privacy.mechanism import (
    client_noise,
    clip_vector,
    noise_std_sum,
    privatize_report,
    release_allowed,
    split_noise,
    validate_report,
)

__all__ = ["LEDGER_FILE", "LedgerEntry", "PrivacyLedger", "client_noise", "clip_vector", "noise_std_sum", "plan_budget",
           "privatize_report", "release_allowed", "split_noise", "validate_report"]
