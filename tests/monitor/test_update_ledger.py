"""privacy.json with both ledgers: the updates' and the monitor's, apart and together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openpfi.algorithms.privacy import DEFAULT_ORDERS, gaussian_rdp, rdp_to_epsilon, round_rdp
from openpfi.errors import UserError
from openpfi.monitor.privacy import PrivacyLedger
from openpfi.monitor.update_ledger import UpdateLedger, save_update_ledger


def test_rounds_compose_and_replay(tmp_path: Path) -> None:
    # Prepare
    ledger = UpdateLedger(1e-5)
    # Execute: two rounds at q = 0.1, z = 1, then one distributed round with half the shares arriving
    ledger.record(1, 1.0, 0.1, 1.0, "central", 3)
    ledger.record(2, 1.0, 0.1, 1.0, "central", 2)
    ledger.record(3, 1.0, 0.1, 1.0, "distributed", 1, effective_noise_multiplier=2 ** -0.5)
    # Assert
    rdp = 2 * round_rdp(1.0, 0.1) + round_rdp(2 ** -0.5, 0.1)
    assert ledger.epsilon_total == pytest.approx(rdp_to_epsilon(rdp, DEFAULT_ORDERS, 1e-5)[0], rel=1e-12)
    assert UpdateLedger.from_dict(ledger.to_dict()).epsilon_total == ledger.epsilon_total
    assert ledger.truncated(1).epsilon_total == ledger.entries[0].epsilon_total
    with pytest.raises(UserError, match="already has round 3"):
        ledger.record(3, 1.0, 0.1, 1.0, "central", 1)


def test_both_writers_keep_each_others_part(tmp_path: Path) -> None:
    # Prepare: the monitor's ledger (2 released rounds at z = 2) and the updates' (2 rounds at z = 1, q = 1)
    monitor = PrivacyLedger(1e-5)
    monitor.record(1, 2.0, 1.0, 4, True)
    monitor.record(2, 2.0, 1.0, 4, True)
    updates = UpdateLedger(1e-5)
    updates.record(1, 1.0, 1.0, 1.0, "central", 4)
    updates.record(2, 1.0, 1.0, 1.0, "central", 4)
    # Execute: the two write in either order
    save_update_ledger(tmp_path, updates)
    monitor.save(tmp_path)
    data = json.loads((tmp_path / "privacy.json").read_text())
    # Assert: the monitor's ledger still loads from the top level; the combined epsilon adds the RDP curves
    assert PrivacyLedger.load(tmp_path).epsilon_total == monitor.epsilon_total
    assert data["updates"]["epsilon_total"] == updates.epsilon_total
    together = rdp_to_epsilon(2 * gaussian_rdp(2.0) + updates.rdp, DEFAULT_ORDERS, 1e-5)[0]
    c = data["combined"]
    assert c["epsilon_total"] == pytest.approx(together, rel=1e-12)
    assert max(c["epsilon_monitor"], c["epsilon_updates"]) < c["epsilon_total"] < c["epsilon_monitor"] + c["epsilon_updates"]
    save_update_ledger(tmp_path, updates)
    assert json.loads((tmp_path / "privacy.json").read_text())["epsilon_total"] == monitor.epsilon_total
    assert np.isfinite(c["epsilon_total"])
