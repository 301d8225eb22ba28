"""AlignServer: FMGDA's server-side MGDA over per-objective deltas, drift metrics, bytes."""

from __future__ import annotations

import pytest
import torch

from openpfi.algorithms.server_opt import ServerOptConfig
from openpfi.client.messages import ClientUpdate
from openpfi.errors import UserError
from openpfi.strategies.align_server import AlignServer
from openpfi.strategies.server import SamplingConfig


def _server(method: str) -> AlignServer:
    s = AlignServer(ServerOptConfig("fedavg"), SamplingConfig(2, 1, 0), ["harmless", "helpful"], method)
    s.init({"w": torch.tensor([1.0, 1.0])})
    return s


def _d(x: float, y: float) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor([x, y])}


def test_fmgda_solves_mgda_over_objective_means() -> None:
    # Prepare: objective means D_harmless = (2, 0), D_helpful = (0, 1) -> MGDA lambda = (1/5, 4/5)
    s = _server("fmgda")
    pairs = {"pairs_harmless": 1.0, "pairs_helpful": 1.0, "train_loss": 0.5}
    ups = [
        ClientUpdate("a", 2, {}, pairs, {"harmless": _d(3.0, 0.0), "helpful": _d(0.0, 1.0)}),
        ClientUpdate("b", 2, {}, pairs, {"harmless": _d(1.0, 0.0), "helpful": _d(0.0, 1.0)}),
    ]
    # Execute
    m = s.aggregate_fit(1, ups)
    # Assert: combined = (0.4, 0.8); w = (1.4, 1.8)
    torch.testing.assert_close(s.params["w"], torch.tensor([1.4, 1.8]))
    assert m["server_lambda_harmless"] == pytest.approx(0.2) and m["server_lambda_helpful"] == pytest.approx(0.8)
    assert m["bytes_up"] == 4 * 2 * 4  # two clients x two deltas x 2 float32
    # effective updates (0.6, 0.8) and (0.2, 0.8): cosine 0.76 / (1 * 0.8246)
    eff_cos = (0.12 + 0.64) / ((0.36 + 0.64) ** 0.5 * (0.04 + 0.64) ** 0.5)
    assert m["drift_cosine_dispersion"] == pytest.approx(1 - eff_cos)
    assert m["adapters_up_per_client"] == 2.0


def test_fmgda_weights_objective_means_by_pairs_and_skips_missing() -> None:
    # Prepare: client b holds no helpful pairs (it sends no helpful delta)
    s = _server("fmgda")
    ups = [
        ClientUpdate("a", 1, {}, {"pairs_harmless": 1.0, "pairs_helpful": 3.0},
                     {"harmless": _d(4.0, 0.0), "helpful": _d(0.0, 2.0)}),
        ClientUpdate("b", 1, {}, {"pairs_harmless": 3.0, "pairs_helpful": 0.0, "missing_helpful": 1.0},
                     {"harmless": _d(0.0, 0.0)}),
    ]
    # Execute
    m = s.aggregate_fit(1, ups)
    # Assert: D_harmless = (1, 0), D_helpful = (0, 2): lambda = (4/5, 1/5); step (0.8, 0.4)
    torch.testing.assert_close(s.params["w"], torch.tensor([1.8, 1.4]))
    assert m["clients_missing_helpful"] == 1.0


def test_one_adapter_methods_report_lambda_spread_and_drift() -> None:
    s = _server("firm")
    ups = [
        ClientUpdate("a", 1, _d(1.0, 0.0), {"lambda_harmless": 0.2, "lambda_helpful": 0.8}),
        ClientUpdate("b", 1, _d(0.0, 1.0), {"lambda_harmless": 0.6, "lambda_helpful": 0.4}),
    ]
    m = s.aggregate_fit(1, ups)
    torch.testing.assert_close(s.params["w"], torch.tensor([1.5, 1.5]))
    assert m["drift_lambda_spread"] == pytest.approx(0.2)
    assert m["lambda_harmless_mean"] == pytest.approx(0.4)
    assert m["drift_cosine_dispersion"] == pytest.approx(1.0)
    assert m["drift_disagreement"] == pytest.approx(0.5)
    assert m["bytes_up"] == 2 * 2 * 4 and m["adapters_up_per_client"] == 1.0


def test_fmgda_refuses_secure_aggregation_and_mismatched_deltas() -> None:
    s = _server("fmgda")
    with pytest.raises(UserError, match="secure aggregation"):
        s.aggregate_fit(1, [ClientUpdate("a", 1, {}, {})], mean_delta=_d(0.0, 0.0))
    bad = ClientUpdate("a", 1, {}, {}, {"harmless": {"v": torch.zeros(2)}})
    with pytest.raises(UserError, match="does not match"):
        s.aggregate_fit(1, [bad])
