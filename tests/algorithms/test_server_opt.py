"""Tests for openpfi.algorithms.server_opt: two hand-computed steps per optimizer."""

from __future__ import annotations

import math

import pytest
import torch

from openpfi.algorithms.aggregate import weighted_mean
from openpfi.algorithms.server_opt import (
    SERVER_OPTIMIZERS,
    ServerOptConfig,
    init_server_state,
    server_step,
)
from openpfi.algorithms.state import sub
from openpfi.errors import UserError

KEYS = ("w", "b", "c")
X0 = {"w": 1.0, "b": 0.0, "c": -2.0}
DELTA_1 = {"w": 2.0, "b": 0.5, "c": 1.0}
DELTA_2 = {"w": -1.0, "b": 0.5, "c": 0.0}


def _sd(values: dict[str, float]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([values[k]], dtype=torch.float64) for k in KEYS}


def _two_steps(
    cfg: ServerOptConfig,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    params = _sd(X0)
    state = init_server_state(cfg, params)
    params, state = server_step(cfg, params, _sd(DELTA_1), state)
    return server_step(cfg, params, _sd(DELTA_2), state)


def _assert_params(params: dict[str, torch.Tensor], expected: dict[str, float]) -> None:
    for k in KEYS:
        assert float(params[k]) == pytest.approx(expected[k], abs=1e-12), k


def test_fedavg_lr1_gives_weighted_mean_of_client_params() -> None:
    # Prepare
    cfg = ServerOptConfig("fedavg")
    global_params = _sd(X0)
    clients = [
        _sd({"w": 3.0, "b": 1.0, "c": 0.0}),
        _sd({"w": -1.0, "b": 5.0, "c": 4.0}),
    ]
    mean_delta = weighted_mean([sub(c, global_params) for c in clients], [3.0, 1.0])
    # Execute
    new, state = server_step(cfg, global_params, mean_delta, init_server_state(cfg, global_params))
    # Assert: (3 x1 + x2) / 4
    _assert_params(new, {"w": 2.0, "b": 2.0, "c": 1.0})
    assert state == {}


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_fedavg_and_fedprox_two_steps(name: str) -> None:
    # Prepare
    cfg = ServerOptConfig(name, lr=0.5)
    # Execute
    params, state = _two_steps(cfg)
    # Assert: x2 = x0 + 0.5 (d1 + d2)
    _assert_params(params, {"w": 1.5, "b": 0.5, "c": -1.5})
    assert state == {}


def test_fedavgm_two_steps() -> None:
    # Prepare
    cfg = ServerOptConfig("fedavgm", lr=0.5, momentum=0.5)
    # Execute
    params, state = _two_steps(cfg)
    # Assert: m1 = d1, x1 = x0 + 0.5 m1; m2 = 0.5 m1 + d2, x2 = x1 + 0.5 m2
    # w: m1 = 2, x1 = 2, m2 = 0, x2 = 2; b: m1 = .5, x1 = .25, m2 = .75, x2 = .625
    # c: m1 = 1, x1 = -1.5, m2 = .5, x2 = -1.25
    _assert_params(params, {"w": 2.0, "b": 0.625, "c": -1.25})
    assert float(state["m::w"]) == 0.0 and float(state["m::b"]) == 0.75 and float(state["m::c"]) == 0.5


def _adaptive(name: str) -> tuple[dict[str, float], dict[str, float]]:
    """Reddi et al. 2021 Alg. 2 written out on scalars: lr .5, beta1 .5, beta2 .75, tau 1."""
    x, m, v = dict(X0), dict.fromkeys(KEYS, 0.0), dict.fromkeys(KEYS, 1.0)
    for delta in (DELTA_1, DELTA_2):
        for k in KEYS:
            d2 = delta[k] ** 2
            m[k] = 0.5 * m[k] + 0.5 * delta[k]
            if name == "fedadagrad":
                v[k] = v[k] + d2
            elif name == "fedyogi":
                v[k] = v[k] - 0.25 * d2 * (1.0 if v[k] > d2 else -1.0 if v[k] < d2 else 0.0)
            else:
                v[k] = 0.75 * v[k] + 0.25 * d2
            x[k] = x[k] + 0.5 * m[k] / (math.sqrt(v[k]) + 1.0)
    return x, v


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_adaptive_two_steps_match_scalar_algorithm(name: str) -> None:
    # Prepare
    cfg = ServerOptConfig(name, lr=0.5, beta1=0.5, beta2=0.75, tau=1.0)
    expected_x, expected_v = _adaptive(name)
    # Execute
    params, state = _two_steps(cfg)
    # Assert
    _assert_params(params, expected_x)
    for k in KEYS:
        assert float(state[f"v::{k}"]) == pytest.approx(expected_v[k], abs=1e-12)


def test_adaptive_first_step_by_hand() -> None:
    # Prepare: one step of each variant on 'w' (x0 = 1, d = 2, v0 = 1, m1 = 1)
    expected_v1 = {"fedadagrad": 5.0, "fedyogi": 2.0, "fedadam": 1.75}
    for name, v1 in expected_v1.items():
        cfg = ServerOptConfig(name, lr=0.5, beta1=0.5, beta2=0.75, tau=1.0)
        params = _sd(X0)
        # Execute
        new, state = server_step(cfg, params, _sd(DELTA_1), init_server_state(cfg, params))
        # Assert: x1 = 1 + 0.5 * 1 / (sqrt(v1) + 1)
        assert float(state["v::w"]) == v1
        assert float(new["w"]) == pytest.approx(1.0 + 0.5 / (math.sqrt(v1) + 1.0), abs=1e-12)


def test_yogi_sign_branches() -> None:
    # Prepare: v0 = 1; |d| < 1 lowers v, |d| > 1 raises it, |d| = 1 keeps it
    cfg = ServerOptConfig("fedyogi", beta2=0.75, tau=1.0)
    params = _sd(X0)
    # Execute
    _, state = server_step(cfg, params, _sd({"w": 2.0, "b": 0.5, "c": 1.0}), init_server_state(cfg, params))
    # Assert
    assert float(state["v::w"]) == 2.0 and float(state["v::b"]) == 1.0 - 0.25 * 0.25 and float(state["v::c"]) == 1.0


def test_init_state_layout_and_dtypes() -> None:
    # Prepare
    params = {
        "w": torch.zeros(2, dtype=torch.bfloat16),
        "b": torch.zeros(1),
        "c": torch.zeros(1, 1),
    }
    # Execute
    states = {name: init_server_state(ServerOptConfig(name, tau=0.5), params) for name in SERVER_OPTIMIZERS}
    # Assert
    assert states["fedavg"] == {} and states["fedprox"] == {}
    assert sorted(states["fedavgm"]) == ["m::b", "m::c", "m::w"]
    adam = states["fedadam"]
    assert sorted(adam) == ["m::b", "m::c", "m::w", "v::b", "v::c", "v::w"]
    assert adam["m::w"].dtype == torch.float32 and float(adam["m::w"].abs().sum()) == 0.0
    assert torch.equal(adam["v::c"], torch.full((1, 1), 0.25))


def test_step_does_not_mutate_and_keeps_dtype() -> None:
    # Prepare
    cfg = ServerOptConfig("fedadam")
    params = {
        "w": torch.tensor([1.0, 2.0]),
        "b": torch.tensor([0.0]),
        "c": torch.tensor([[3.0]]),
    }
    delta = {
        "w": torch.tensor([0.5, -0.5]),
        "b": torch.tensor([1.0]),
        "c": torch.tensor([[0.0]]),
    }
    state = init_server_state(cfg, params)
    before = {k: t.clone() for k, t in {**params, **state}.items()}
    # Execute
    new, _ = server_step(cfg, params, delta, state)
    # Assert
    assert all(torch.equal(before[k], t) for k, t in {**params, **state}.items())
    assert new["w"].dtype == torch.float32 and not torch.equal(new["w"], params["w"])
    assert float(new["c"]) == 3.0  # zero delta and zero momentum: no move


def test_state_of_another_optimizer_is_rejected() -> None:
    # Prepare
    params = _sd(X0)
    adam_state = init_server_state(ServerOptConfig("fedadam"), params)
    # Execute / Assert
    with pytest.raises(UserError, match="init_server_state"):
        server_step(ServerOptConfig("fedavgm"), params, _sd(DELTA_1), adam_state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "sgd"}, "unknown server optimizer"),
        ({"name": "fedadam", "lr": 0.0}, "lr"),
        ({"name": "fedadam", "beta2": 1.0}, "beta2"),
        ({"name": "fedadam", "tau": 0.0}, "tau"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    # Execute / Assert
    with pytest.raises(UserError, match=message):
        ServerOptConfig(**kwargs)  # type: ignore[arg-type]
