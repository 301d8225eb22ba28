from __future__ import annotations

import math

import pytest
import torch

from openpfi.algorithms.server_opt import ServerOptConfig
from openpfi.client.messages import ClientUpdate, EvalResult
from openpfi.strategies.round_result import EvalSum
from openpfi.strategies.server import FedServer, SamplingConfig, sample_clients


def _server(name: str = "fedavg", min_fit: int = 1) -> FedServer:
    s = FedServer(ServerOptConfig(name), SamplingConfig(clients_per_round=2, min_fit_clients=min_fit, seed=0))
    s.init({"w": torch.tensor([1.0, 2.0, 3.0])})
    return s


def test_sampling_is_uniform_seeded_and_without_replacement():
    ids = [f"c{i}" for i in range(10)]
    a = sample_clients(ids, 4, seed=1, round_num=3)
    assert a == sample_clients(ids, 4, seed=1, round_num=3)
    assert len(set(a)) == 4
    assert sample_clients(ids, 20, seed=1, round_num=3) == ids
    counts = dict.fromkeys(ids, 0)
    for r in range(2000):
        for c in sample_clients(ids, 3, seed=0, round_num=r):
            counts[c] += 1
    assert all(abs(v / 2000 - 0.3) < 0.04 for v in counts.values())


def test_fedavg_gives_example_weighted_mean_of_client_models():
    # Prepare: global w = [1,2,3]; client A (1 example) moves to [2,2,3], client B (3 examples) to [1,6,3]
    s = _server()
    ups = [
        ClientUpdate("A", 1, {"w": torch.tensor([1.0, 0.0, 0.0])}, {"train_loss": 1.0}),
        ClientUpdate("B", 3, {"w": torch.tensor([0.0, 4.0, 0.0])}, {"train_loss": 3.0}),
    ]
    # Execute
    m = s.aggregate_fit(1, ups)
    # Assert: (1*[2,2,3] + 3*[1,6,3]) / 4 = [1.25, 5, 3]
    assert torch.allclose(s.params["w"], torch.tensor([1.25, 5.0, 3.0]))
    assert m["train_loss"] == pytest.approx(2.5)
    assert m["bytes_up"] == 2 * 3 * 4
    assert m["bytes_down"] == 2 * 3 * 4


def test_too_few_answers_fail_the_round():
    s = _server(min_fit=2)
    with pytest.raises(RuntimeError, match="min_fit_clients"):
        s.aggregate_fit(1, [ClientUpdate("A", 1, {"w": torch.zeros(3)})], failures=1)


def test_evaluate_summary_holds_means_only():
    # Prepare: two clients at losses 1 and 3 (perplexities e and e^3), one with a personal loss of 0.5
    s = _server()
    evals = EvalSum.of([EvalResult("A", 2, 1.0, 10, personal_loss=0.5), EvalResult("B", 2, 3.0, 10)])
    # Execute
    m = s.aggregate_evaluate(1, evals)
    # Assert: the means, and no figure of one client (worst, spread) on the server
    assert evals == EvalSum(2, 4.0, pytest.approx(math.e + math.e**3), 1, 0.5)
    assert m == {"eval_loss_mean": 2.0, "eval_ppl_mean": pytest.approx((math.e + math.e**3) / 2),
                 "personal_loss_mean": 0.5}
    assert s.aggregate_evaluate(1, EvalSum.of([])) == {}
