"""Flower's side of trustworthy adaptation: the DP sum under SecAgg+, compressed payloads on the wire."""

from __future__ import annotations

import numpy as np
import torch

from openpfi.algorithms.wire import encode
from openpfi.client.messages import ClientUpdate
from openpfi.config import load_config
from openpfi.engines.flower import records, secagg
from openpfi.strategies.update_privacy import UpdateDP


def test_dp_updates_are_summed_unweighted_and_divided_by_the_expected_clients() -> None:
    # Prepare: C = 1, z = 0.5 -> each coordinate is packed over +-C (1 + 6 z) = +-4; 4 clients expected per round
    cfg = load_config(None, ["flower.secagg=updates", "data.num_clients=4", "federation.clients_per_round=4",
                             "privacy.update_clip=1", "privacy.update_noise_multiplier=0.5"])
    bound = secagg.dp_bound(UpdateDP(1.0, 0.5, 1.0, 4.0, "distributed", 1e-5))
    ups = [ClientUpdate("a", 3, {"w": torch.tensor([0.4, -2.0])}), ClientUpdate("b", 9, {"w": torch.tensor([0.2, 1.0])})]
    packed = [secagg.pack(u, cfg, update_bound=bound) for u in ups]
    mean = [np.mean([p[0][i] for p in packed], axis=0) for i in range(2)]
    # Execute
    sums = secagg.unpack(mean, 2, packed[0][1], {"w": torch.zeros(2)}, cfg, update_bound=bound)
    # Assert: (0.4 + 0.2) / 4 and (-2 + 1) / 4, whatever the example counts
    assert bound == 4.0
    assert sums.mean_delta is not None and torch.allclose(sums.mean_delta["w"], torch.tensor([0.15, -0.25]))


def test_a_compressed_payload_crosses_the_records_unchanged() -> None:
    delta = {"m.lora_A.weight": torch.randn(2, 3), "m.lora_B.weight": torch.randn(4, 2)}
    for kind in ("fp16", "int8", "topk"):
        update = ClientUpdate("a", 5, encode(delta, kind, 0.5), {"train_loss": 1.0})
        back = records.content_to_update(records.update_to_content(update))
        assert back.delta.keys() == update.delta.keys()
        assert all(torch.equal(back.delta[k], update.delta[k]) and back.delta[k].dtype == update.delta[k].dtype
                   for k in update.delta)
        assert back.bytes_up == update.bytes_up
