"""openpfi values <-> Flower records: exact round trips, numpy arrays only."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from openpfi.client.messages import ClientUpdate, EvalResult, MonitorReport
from openpfi.engines.flower import records
from openpfi.errors import UserError


def test_state_round_trip_is_exact() -> None:
    # Prepare
    state = {"b.lora_B": torch.tensor([[1.5, -2.25], [0.0, 3.0]]), "a.lora_A": torch.arange(6.0).reshape(2, 3)}
    # Execute
    record = records.state_to_record(state)
    back = records.record_to_state(record)
    # Assert
    assert list(record.keys()) == ["a.lora_A", "b.lora_B"]  # sorted
    assert all(a.stype == "numpy.ndarray" for a in record.values())  # np.save, not pickle
    assert set(back) == set(state)
    for k in state:
        assert back[k].dtype == torch.float32
        assert torch.equal(back[k], state[k])


def test_update_round_trip_keeps_delta_extra_monitor_and_scalars() -> None:
    # Prepare
    update = ClientUpdate(
        "alice",
        7,
        {"w": torch.tensor([0.5, -0.25])},
        {"train_loss": 1.25, "tokens": 40.0},
        extra={"harmless": {"w": torch.tensor([1.0, 2.0])}},
        monitor=MonitorReport(np.array([0.1, 0.0, 1.0])),
    )
    # Execute
    back = records.content_to_update(records.update_to_content(update))
    # Assert
    assert back.client_id == "alice" and back.num_examples == 7
    assert torch.equal(back.delta["w"], update.delta["w"])
    assert torch.equal(back.extra["harmless"]["w"], torch.tensor([1.0, 2.0]))
    assert back.monitor is not None and np.array_equal(back.monitor.values, [0.1, 0.0, 1.0])
    assert back.scalars == {"train_loss": 1.25, "tokens": 40.0}


def test_secagg_reply_leaves_delta_and_monitor_home() -> None:
    # Prepare
    update = ClientUpdate("bob", 3, {"w": torch.ones(2)}, {"train_loss": 2.0}, monitor=MonitorReport(np.ones(4)))
    # Execute
    content = records.update_to_content(update, with_delta=False, with_monitor=False)
    back = records.content_to_update(content)
    # Assert
    assert list(content.array_records) == []
    assert back.delta == {} and back.monitor is None and back.num_examples == 3


def test_eval_round_trip() -> None:
    # Prepare
    result = EvalResult("carol", 5, 2.5, 40, personal_loss=2.0)
    # Execute
    back = records.content_to_eval(records.eval_to_content(result))
    # Assert
    assert (back.client_id, back.num_examples, back.loss, back.target_tokens, back.personal_loss) == ("carol", 5, 2.5, 40, 2.0)


def test_reply_error_shows_the_client_exception_message() -> None:
    # Prepare: Flower's format for an exception raised in a ClientApp
    reply = SimpleNamespace(error=SimpleNamespace(code=2, reason="<class 'openpfi.errors.UserError'>:<'no partition-id'>"))
    # Execute / Assert
    assert records.reply_error(reply) == "no partition-id"  # type: ignore[arg-type]
    assert records.reply_error(SimpleNamespace(error=SimpleNamespace(code=3, reason=""))) == "error code 3"  # type: ignore[arg-type]


def test_a_reply_with_a_scalar_outside_the_allow_list_is_refused_on_the_server() -> None:
    # Prepare: a node that adds a raw per-client figure to its fit metrics
    content = records.update_to_content(ClientUpdate("dave", 3, {"w": torch.ones(2)}, {"train_loss": 2.0}))
    content.metric_records["fit"]["eval_loss"] = 1.5
    # Execute / Assert
    with pytest.raises(UserError, match=r"client dave sent scalar\(s\) \['eval_loss'\]"):
        records.content_to_update(content)
