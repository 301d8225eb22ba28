"""The server's screening, robust aggregation and DP mean, on hand-computed updates."""

from __future__ import annotations

import math

import pytest
import torch

from openpfi.algorithms.privacy import add_gaussian_noise
from openpfi.algorithms.server_opt import ServerOptConfig
from openpfi.algorithms.wire import encode
from openpfi.client.federated import derive_seed
from openpfi.client.messages import ClientUpdate
from openpfi.strategies.robust import RobustRule
from openpfi.strategies.screening import ScreenRules
from openpfi.strategies.server import FedServer, SamplingConfig
from openpfi.strategies.update_privacy import UpdateDP, UpdatePrivacy


def _server(rules: ScreenRules | None = None, robust: RobustRule | None = None,
            privacy: UpdatePrivacy | None = None, opt: str = "fedavg") -> FedServer:
    s = FedServer(ServerOptConfig(opt), SamplingConfig(8, 1, 0), rules=rules, robust=robust, privacy=privacy)
    s.init({"w": torch.tensor([1.0, 2.0, 3.0])})
    return s


def _up(cid: str, *w: float, n: int = 1, kind: str = "none") -> ClientUpdate:
    return ClientUpdate(cid, n, encode({"w": torch.tensor(w)}, kind), {"train_loss": 1.0})


GOOD = [_up("A", 1.0, 0.0, 0.0), _up("B", 0.0, 1.0, 0.0, n=3)]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (_up("X", float("nan"), 0.0, 0.0), "nonfinite"),
        (_up("X", float("inf"), 0.0, 0.0), "nonfinite"),
        (ClientUpdate("X", 1, {"w": torch.zeros(4)}), "shape"),
        (ClientUpdate("X", 1, {"w": torch.zeros(3, dtype=torch.float64)}), "dtype"),
        (ClientUpdate("X", 1, {"v": torch.zeros(3)}), "keys"),
        (ClientUpdate("X", 1, {"w": torch.zeros(3), "v": torch.zeros(1)}), "keys"),
        (_up("X", 1e6, 0.0, 0.0), "norm"),
        (_up("X", 0.0, 0.0, 0.0, n=0), "examples"),
        (_up("X", 0.0, 0.0, 0.0, n=10_000), "examples"),
    ],
)
def test_a_bad_update_is_rejected_and_never_changes_the_global_adapter(bad: ClientUpdate, reason: str) -> None:
    # Prepare: the same round with and without the bad client
    rules = ScreenRules(max_update_norm=100.0, max_examples=1000)
    clean, attacked = _server(rules), _server(rules)
    clean.aggregate_fit(1, clean.screen_fit(1, GOOD)[0])
    # Execute
    valid, rejected = attacked.screen_fit(1, [GOOD[0], bad, GOOD[1]])
    attacked.aggregate_fit(1, valid, failures=len(rejected))
    # Assert
    assert [r.reason for r in rejected] == [reason] and rejected[0].client_id == "X"
    assert torch.equal(attacked.params["w"], clean.params["w"])


def test_compressed_uploads_are_decoded_and_counted_as_sent() -> None:
    # Prepare: int8 payloads of 3 values: 3 bytes + one 4-byte scale each
    s = _server(ScreenRules(compression="int8"))
    ups = [_up("A", 127.0, 0.0, 0.0, kind="int8"), _up("B", 0.0, -127.0, 0.0, kind="int8")]
    # Execute
    valid, _ = s.screen_fit(1, ups)
    m = s.aggregate_fit(1, valid)
    # Assert: the mean of [127, 0, 0] and [0, -127, 0] (equal weights) added to [1, 2, 3]
    assert torch.equal(s.params["w"], torch.tensor([64.5, -61.5, 3.0]))
    assert m["bytes_up"] == 2 * (3 + 4)


def test_median_and_server_optimizer_step_on_the_robust_aggregate() -> None:
    # Prepare: three honest clients and one scaled attacker
    ups = [_up("A", 1.0, 0.0, 0.0), _up("B", 2.0, 0.0, 0.0), _up("C", 3.0, 0.0, 0.0), _up("D", 1000.0, 0.0, 0.0)]
    s = _server(robust=RobustRule("median"), opt="fedavgm")
    # Execute
    s.aggregate_fit(1, ups)
    # Assert: median 2.5 on the first coordinate; FedAvgM's first step x + lr * m with m = Delta
    assert torch.allclose(s.params["w"], torch.tensor([3.5, 2.0, 3.0]))


def test_krum_needs_2f_plus_3_valid_updates() -> None:
    s = _server(robust=RobustRule("krum", byzantine=1))
    with pytest.raises(RuntimeError, match="fewer than the 5"):
        s.aggregate_fit(1, GOOD * 2)


def test_central_dp_mean_is_clipped_noised_and_divided_by_the_expected_clients() -> None:
    # Prepare: C = 1, z = 0.5, m = 4; A's delta has norm 5 (clipped to [0.6, 0.8, 0]), B's norm 0.5 (kept)
    dp = UpdatePrivacy(UpdateDP(clip=1.0, noise_multiplier=0.5, sampling_rate=1.0, expected_clients=4.0,
                                mode="central", delta=1e-5), secret=b"k" * 32)
    s = _server(privacy=dp)
    ups = [_up("A", 3.0, 4.0, 0.0), _up("B", 0.0, 0.0, 0.5)]
    # Execute
    m = s.aggregate_fit(1, ups)
    # Assert: the noise is N(0, (z C)^2) from the server's secret and round
    gen = torch.Generator().manual_seed(derive_seed((b"k" * 32).hex(), "update-noise", 1))
    noised = add_gaussian_noise({"w": torch.tensor([0.6, 0.8, 0.5])}, 0.5, gen)["w"]
    assert torch.allclose(s.params["w"], torch.tensor([1.0, 2.0, 3.0]) + noised / 4, atol=1e-6)
    assert m["update_epsilon_total"] == pytest.approx(dp.ledger.epsilon_total) and m["update_epsilon_total"] > 0


def test_poisson_sampling_rate() -> None:
    # Prepare: q = 0.25 over 40 clients, 200 rounds
    dp = UpdatePrivacy(UpdateDP(1.0, 1.0, 0.25, 10.0, "central", 1e-5), secret=b"s" * 32)
    ids = [f"c{i}" for i in range(40)]
    # Execute
    sizes = [len(dp.sample(ids, r)) for r in range(200)]
    # Assert: mean 10, binomial spread sqrt(40 * 0.25 * 0.75) = 2.74
    assert abs(sum(sizes) / 200 - 10) < 3 * 2.74 / math.sqrt(200)
    assert len(set(sizes)) > 3 and dp.sample(ids, 5) == dp.sample(ids, 5)
