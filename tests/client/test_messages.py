"""What may cross from a client to the server: allow-listed scalars and a typed, read-only monitor report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openpfi.client.messages import OBJECTIVE_SCALARS, UPDATE_SCALARS, ClientUpdate, MonitorReport, check_scalars
from openpfi.errors import UserError


def test_allow_listed_scalars_pass_and_per_objective_names_follow_the_objectives():
    # Prepare / Execute / Assert: every listed name, and <name>_<objective> for the config's objectives
    check_scalars("a", dict.fromkeys(UPDATE_SCALARS, 1.0))
    check_scalars("a", {f"{n}_{m}": 1.0 for n in OBJECTIVE_SCALARS for m in ("harmless", "helpful", "honest")})
    with pytest.raises(UserError, match=r"client a sent scalar\(s\) \['lambda_evil'\]"):
        check_scalars("a", {"lambda_evil": 0.5})


def test_an_update_with_a_scalar_outside_the_allow_list_is_refused_also_after_it_was_built():
    with pytest.raises(UserError, match=r"\['eval_loss'\] that a ClientUpdate may not carry"):
        ClientUpdate("a", 1, {}, {"train_loss": 1.0, "eval_loss": 2.0})
    update = ClientUpdate("a", 1, {}, {"train_loss": 1.0})
    update.scalars["heldout_loss"] = 3.0  # grown after construction: the engine checks again
    with pytest.raises(UserError, match="heldout_loss"):
        update.check()


def test_the_monitor_report_is_a_read_only_copy_counted_at_float32():
    # Prepare
    vector = np.array([[0.5, -1.0], [2.0, 0.25]])
    # Execute
    report = MonitorReport(vector)
    vector[0, 0] = 9.0
    # Assert: flat float64, not the caller's array, and not writable
    assert report.values.tolist() == [0.5, -1.0, 2.0, 0.25] and report.values.dtype == np.float64
    with pytest.raises(ValueError):
        report.values[0] = 1.0
    assert len(report) == 4 and report.nbytes == 16
    update = ClientUpdate("a", 1, {"w": torch.zeros(3)}, monitor=report)
    assert update.bytes_up == 3 * 4 + 16
    with pytest.raises(UserError, match="not a MonitorReport"):
        ClientUpdate("a", 1, {}, monitor=vector)  # type: ignore[arg-type]
