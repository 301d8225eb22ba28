"""Aggregation of client states: FedAvg and robust alternatives.

- :func:`weighted_mean` — FedAvg (McMahan et al. 2017, "Communication-Efficient
  Learning of Deep Networks from Decentralized Data").
- :func:`coordinate_median`, :func:`trimmed_mean` — Yin et al. 2018,
  "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates".
- :func:`krum` — Blanchard et al. 2017, "Machine Learning with Adversaries:
  Byzantine Tolerant Gradient Descent" (Krum and Multi-Krum).

All work on client parameters or client deltas alike, compute in float64 and
return tensors in the dtype of the first state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from openpfi.algorithms.state import StateDict, check_same_keys
from openpfi.errors import UserError


def _cast_back(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Cast a float64 result to the dtype of ``like`` (rounding for integer dtypes)."""
    if not (like.is_floating_point() or like.is_complex()):
        t = torch.round(t)
    return t.to(like.dtype)


def check_weights(weights: Sequence[float], n: int) -> list[float]:
    """Validate one finite, non-negative weight per state with a positive total."""
    if len(weights) != n:
        raise UserError(f"got {len(weights)} weights for {n} state dicts: need one weight per state")
    ws = [float(w) for w in weights]
    if any(not math.isfinite(w) or w < 0 for w in ws):
        raise UserError(f"weights must be finite and non-negative, got {ws}")
    if sum(ws) <= 0:
        raise UserError(f"total weight must be positive, got {sum(ws)} (all clients have zero examples?)")
    return ws


def weighted_mean(states: Sequence[StateDict], weights: Sequence[float]) -> StateDict:
    """FedAvg: ``x = sum_i w_i x_i / sum_i w_i`` (McMahan et al. 2017).

    ``weights`` are usually example counts. The sum runs in float64, one
    client at a time (a running weighted sum), and the result is cast back to
    each tensor's dtype.
    """
    keys = check_same_keys(states)
    ws = check_weights(weights, len(states))
    total = sum(ws)
    acc = {k: torch.zeros(states[0][k].shape, dtype=torch.float64) for k in keys}
    for state, w in zip(states, ws, strict=True):
        for k in keys:
            acc[k] += w * state[k].detach().to("cpu", torch.float64)
    first = states[0]
    return {k: _cast_back(acc[k] / total, first[k]).to(first[k].device) for k in keys}


def _stack(states: Sequence[StateDict], key: str) -> torch.Tensor:
    """Tensors of one key stacked along a new leading client axis, float64."""
    return torch.stack([s[key].detach().to("cpu", torch.float64) for s in states])  # (n, *shape)


def coordinate_median(states: Sequence[StateDict]) -> StateDict:
    """Coordinate-wise median (Yin et al. 2018).

    For an even number of clients the median is the mean of the two middle
    values (so two clients give their plain mean).
    """
    keys = check_same_keys(states)
    n = len(states)
    out: StateDict = {}
    for k in keys:
        srt = torch.sort(_stack(states, k), dim=0).values
        if n % 2 == 1:
            med = srt[n // 2]
        else:
            med = 0.5 * (srt[n // 2 - 1] + srt[n // 2])
        out[k] = _cast_back(med, states[0][k]).to(states[0][k].device)
    return out


def trimmed_mean(states: Sequence[StateDict], trim_fraction: float) -> StateDict:
    """Coordinate-wise trimmed mean (Yin et al. 2018).

    With ``b = floor(trim_fraction * n)``, each coordinate drops its ``b``
    largest and ``b`` smallest values across clients and averages the other
    ``n - 2b`` (unweighted). ``trim_fraction`` must be in ``[0, 0.5)``.
    """
    keys = check_same_keys(states)
    n = len(states)
    if not 0.0 <= trim_fraction < 0.5:
        raise UserError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    b = math.floor(trim_fraction * n)
    out: StateDict = {}
    for k in keys:
        srt = torch.sort(_stack(states, k), dim=0).values
        kept = srt[b : n - b]
        out[k] = _cast_back(kept.mean(dim=0), states[0][k]).to(states[0][k].device)
    return out


def krum_scores(states: Sequence[StateDict], num_byzantine: int) -> list[float]:
    """Krum score of each client (Blanchard et al. 2017).

    ``score(i) = sum of ||x_i - x_j||^2 over the n - f - 2 clients j != i
    closest to i``, with ``f = num_byzantine``. Requires ``n > 2f + 2``.
    """
    keys = check_same_keys(states)
    n = len(states)
    f = num_byzantine
    if f < 0:
        raise UserError(f"num_byzantine must be >= 0, got {f}")
    if n <= 2 * f + 2:
        raise UserError(f"Krum needs more than 2*num_byzantine + 2 = {2 * f + 2} clients, got {n}")
    flat = torch.stack(
        [torch.cat([s[k].detach().to("cpu", torch.float64).reshape(-1) for k in sorted(keys)]) for s in states]
    )  # (n, d)
    dist2 = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            dist2[i, j] = dist2[j, i] = torch.sum((flat[i] - flat[j]) ** 2)
    scores: list[float] = []
    for i in range(n):
        others = torch.cat([dist2[i, :i], dist2[i, i + 1 :]])
        nearest = torch.sort(others).values[: n - f - 2]
        scores.append(float(nearest.sum()))
    return scores


def krum(states: Sequence[StateDict], num_byzantine: int, multi: int = 1) -> StateDict:
    """Krum / Multi-Krum (Blanchard et al. 2017).

    Selects the ``multi`` clients with the lowest :func:`krum_scores` (ties
    broken by lower client index) and returns their UNWEIGHTED mean, as
    Blanchard et al. define Multi-Krum (Flower's ``Krum`` strategy instead
    weights the selected clients by their example counts); ``multi = 1`` is
    Krum (the selected client's state itself).
    """
    n = len(states)
    if not 1 <= multi <= n:
        raise UserError(f"multi must be between 1 and the number of clients {n}, got {multi}")
    scores = krum_scores(states, num_byzantine)
    chosen = sorted(range(n), key=lambda i: (scores[i], i))[:multi]
    return weighted_mean([states[i] for i in chosen], [1.0] * multi)
