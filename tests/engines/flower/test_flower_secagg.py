"""What SecAgg+ sums: pack on each client, the workflow's mean, unpack on the server."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openpfi.algorithms.aggregate import weighted_mean
from openpfi.client.messages import ClientUpdate, MonitorReport
from openpfi.config import Config, load_config
from openpfi.engines.flower import secagg


def _cfg(mode: str) -> Config:
    return load_config(None, [f"flower.secagg={mode}", "data.max_examples=10", "flower.secagg_update_clip=0.5"])


def _mean(per_client: list[list[np.ndarray]]) -> list[np.ndarray]:
    """What SecAggPlusWorkflow returns (weight 1 per client), without the quantization noise."""
    return [np.mean([arrays[i] for arrays in per_client], axis=0) for i in range(len(per_client[0]))]


def test_updates_mode_gives_the_weighted_mean_delta_and_the_monitor_sum() -> None:
    # Prepare: 2 clients, 3 parameters, 4 and 8 examples (W = 10)
    cfg = _cfg("updates")
    a = ClientUpdate("a", 4, {"w": torch.tensor([0.1, -0.2]), "b": torch.tensor([0.3])}, monitor=MonitorReport(np.array([1.0, 0.0])))
    b = ClientUpdate("b", 8, {"w": torch.tensor([0.4, 0.2]), "b": torch.tensor([-0.3])}, monitor=MonitorReport(np.array([0.5, 1.0])))
    packed = [secagg.pack(u, cfg) for u in (a, b)]
    # Execute
    sums = secagg.unpack(_mean([p[0] for p in packed]), 2, packed[0][1], {"w": torch.zeros(2), "b": torch.zeros(1)}, cfg)
    # Assert: (4 * 0.1 + 8 * 0.4) / 12 = 0.3, (4 * -0.2 + 8 * 0.2) / 12 = 0.0667, (4 * 0.3 - 8 * 0.3) / 12 = -0.1
    want = weighted_mean([a.delta, b.delta], [4, 8])
    assert packed[0][1] == secagg.Layout(("b", "w"), 2, 1.0)
    assert sums.mean_delta is not None
    for k in want:
        assert torch.allclose(sums.mean_delta[k], want[k], atol=1e-7)
    assert torch.allclose(sums.mean_delta["w"], torch.tensor([0.3, 0.8 / 12]), atol=1e-7)
    assert sums.monitor_sum is not None and np.allclose(sums.monitor_sum, [1.5, 1.0])
    assert all(p[2] == 0.0 for p in packed)  # nothing clipped


def test_monitor_mode_sums_reports_only() -> None:
    cfg = _cfg("monitor")
    ups = [ClientUpdate(c, 5, {"w": torch.ones(2)}, monitor=MonitorReport(np.array([float(i), 2.0]))) for i, c in enumerate("abc")]
    packed = [secagg.pack(u, cfg, monitor_bound=4.0) for u in ups]
    sums = secagg.unpack(_mean([p[0] for p in packed]), 3, packed[0][1], {"w": torch.zeros(2)}, cfg)
    assert packed[0][1] == secagg.Layout((), 2, 4.0)
    assert sums.mean_delta is None
    assert sums.monitor_sum is not None and np.allclose(sums.monitor_sum, [3.0, 6.0])


def test_values_beyond_the_clip_are_clipped_and_counted() -> None:
    # |delta| * w / clip = 2.0 * 1 / 0.5 = 4 > 1: clipped to 1
    cfg = _cfg("updates")
    arrays, _, clipped = secagg.pack(ClientUpdate("a", 10, {"w": torch.tensor([2.0, 0.0])}), cfg)
    assert clipped == pytest.approx(1 / 3)  # one of three coordinates (two deltas + the weight)
    assert arrays[0].tolist() == [1.0, 0.0] and arrays[1].tolist() == [1.0]


def test_no_monitor_and_no_update_sum_means_an_empty_layout() -> None:
    _, layout, _ = secagg.pack(ClientUpdate("a", 3, {"w": torch.ones(1)}), _cfg("monitor"))
    assert layout.empty
    assert secagg.Layout.from_record(layout.record()) == layout


def test_the_monitor_clip_covers_six_sigma_of_a_clients_noise_share() -> None:
    # sigma_sum = 4, 4 clients: each client's share has sigma 2; 1 + 6 * 2 = 13
    assert secagg.monitor_clip(_cfg("monitor"), noise_std_sum=4.0, n_expected=4) == pytest.approx(13.0)
    fixed = load_config(None, ["flower.secagg=monitor", "flower.secagg_monitor_clip=3"])
    assert secagg.monitor_clip(fixed, noise_std_sum=4.0, n_expected=4) == 3.0
