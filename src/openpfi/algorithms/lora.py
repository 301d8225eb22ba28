"""LoRA-aware aggregation over peft-named adapter state dicts.

For a module with prefix ``P`` (Hu et al. 2022, "LoRA")::

    h = W0 x + (alpha / r) * B A x      P.lora_A.weight: A, shape (r, in)
                                        P.lora_B.weight: B, shape (out, r)
    dW = (alpha / r) * B @ A            shape (out, in)

Averaging A and B separately (:func:`naive_average`) is NOT the average update:
``mean(B) @ mean(A) != mean(B @ A)``. :func:`product_average` averages ``dW``
exactly and re-factors it; :func:`stack_lora` (FLoRA) represents the weighted
sum exactly at a larger rank; :func:`zero_pad_average` (with ``lora_rank.slice_rank``) is the HetLoRA-style baseline for
heterogeneous ranks.
Keys that are not LoRA factors (e.g. ``modules_to_save``) are averaged with
:func:`~openpfi.algorithms.aggregate.weighted_mean`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from openpfi.algorithms.aggregate import check_weights, weighted_mean
from openpfi.algorithms.lora_rank import pad_rank
from openpfi.algorithms.state import StateDict, check_same_keys
from openpfi.errors import UserError

_A = ".lora_A.weight"
_B = ".lora_B.weight"


def lora_pairs(state: StateDict) -> dict[str, tuple[str, str]]:
    """Map each module prefix ``P`` to ``(P.lora_A.weight, P.lora_B.weight)``.

    Raises ``UserError`` if a factor has no partner, is not 2-D, or the ranks
    of A (rows) and B (columns) differ.
    """
    pairs: dict[str, tuple[str, str]] = {}
    for key in state:
        if key.endswith(_A):
            prefix = key[: -len(_A)]
            b_key = prefix + _B
            if b_key not in state:
                raise UserError(f"LoRA factor '{key}' has no matching '{b_key}'")
            a, b = state[key], state[b_key]
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
                raise UserError(
                    f"LoRA factors of '{prefix}' need A (r, in) and B (out, r), got {tuple(a.shape)} and {tuple(b.shape)}"
                )
            pairs[prefix] = (key, b_key)
        elif key.endswith(_B) and key[: -len(_B)] + _A not in state:
            raise UserError(f"LoRA factor '{key}' has no matching '{key[: -len(_B)] + _A}'")
    return pairs


def _lora_keys(pairs: dict[str, tuple[str, str]]) -> set[str]:
    return {k for ab in pairs.values() for k in ab}


def _others_mean(states: Sequence[StateDict], weights: Sequence[float], lora_keys: set[str]) -> StateDict:
    """Weighted mean of the keys that are not LoRA factors."""
    rest = [{k: t for k, t in s.items() if k not in lora_keys} for s in states]
    return weighted_mean(rest, weights) if rest[0] else {}


def _check_hetero(
    states: Sequence[StateDict],
    weights: Sequence[float],
    ranks: Sequence[int],
    alphas: Sequence[float] | None = None,
) -> dict[str, tuple[str, str]]:
    """Same keys, one weight/rank(/alpha) per client, ranks matching the A shapes."""
    check_same_keys(states, shapes=False)
    n = len(states)
    check_weights(weights, n)
    if len(ranks) != n or (alphas is not None and len(alphas) != n):
        raise UserError(f"need one rank and one alpha per client: got {len(ranks)} ranks for {n} clients")
    if any(r < 1 for r in ranks):
        raise UserError(f"LoRA ranks must be >= 1, got {list(ranks)}")
    if alphas is not None and any(not (math.isfinite(a) and a > 0) for a in alphas):
        raise UserError(f"LoRA alphas must be positive, got {list(alphas)}")
    pairs = lora_pairs(states[0])
    if not pairs:
        raise UserError("no LoRA factors found: expected keys ending in '.lora_A.weight' and '.lora_B.weight'")
    for i, s in enumerate(states):
        lora_pairs(s)
        for prefix, (a_key, b_key) in pairs.items():
            if s[a_key].shape[0] != ranks[i]:
                raise UserError(f"client {i}: '{a_key}' has rank {s[a_key].shape[0]}, but ranks[{i}] = {ranks[i]}")
            if s[a_key].shape[1] != states[0][a_key].shape[1] or s[b_key].shape[0] != states[0][b_key].shape[0]:
                raise UserError(f"client {i}: LoRA factors of '{prefix}' adapt a different layer shape")
    return pairs


def naive_average(states: Sequence[StateDict], weights: Sequence[float]) -> StateDict:
    """Weighted mean of A and of B separately (FedIT / naive FedAvg on LoRA).

    This is NOT the average update: ``mean(B) @ mean(A) != mean(B @ A)`` in
    general (cross terms ``B_i A_j`` appear). Kept as a baseline; use
    :func:`product_average` or :func:`stack_lora` for the exact mean update.
    All clients must share one rank.
    """
    for s in states:
        lora_pairs(s)
    return weighted_mean(states, weights)


def lora_delta(a: torch.Tensor, b: torch.Tensor, alpha: float, rank: int) -> torch.Tensor:
    """``dW = (alpha / rank) * B @ A`` in float64, shape (out, in)."""
    return (alpha / rank) * (b.detach().double() @ a.detach().double())


def product_average(
    states: Sequence[StateDict],
    weights: Sequence[float],
    alphas: Sequence[float],
    ranks: Sequence[int],
    out_rank: int,
    out_alpha: float | None = None,
) -> tuple[StateDict, dict[str, torch.Tensor]]:
    """Exact average of the updates, re-factored at rank ``out_rank``.

    Per module: ``dW = sum_i w_i (alpha_i / r_i) B_i A_i / sum_i w_i``; with the
    SVD ``dW = U S V^T`` and ``c = out_alpha / out_rank``::

        B = U_k sqrt(S_k) / sqrt(c)      (out, out_rank)
        A = sqrt(S_k) V_k^T / sqrt(c)    (out_rank, in)

    so ``c * B @ A`` is the best rank-``out_rank`` approximation of ``dW``
    (exact when ``out_rank >= sum_i r_i``); missing ranks are zero-padded.
    ``out_alpha`` defaults to the clients' common alpha (``UserError`` if the
    alphas differ). Returns the new adapter (non-LoRA keys weighted-averaged)
    and the untruncated mean ``dW`` per module prefix.
    """
    pairs = _check_hetero(states, weights, ranks, alphas)
    if out_rank < 1:
        raise UserError(f"out_rank must be >= 1, got {out_rank}")
    if out_alpha is None:
        if len(set(alphas)) != 1:
            raise UserError(f"clients use different LoRA alphas {list(alphas)}: pass out_alpha explicitly")
        out_alpha = float(alphas[0])
    if not (math.isfinite(out_alpha) and out_alpha > 0):
        raise UserError(f"out_alpha must be positive, got {out_alpha}")
    out = _others_mean(states, weights, _lora_keys(pairs))
    total = float(sum(weights))
    root_c = math.sqrt(out_alpha / out_rank)
    deltas: dict[str, torch.Tensor] = {}
    for prefix, (a_key, b_key) in pairs.items():
        dw = torch.zeros(states[0][b_key].shape[0], states[0][a_key].shape[1], dtype=torch.float64)  # (out, in)
        for s, w, al, r in zip(states, weights, alphas, ranks, strict=True):
            dw += (w / total) * lora_delta(s[a_key], s[b_key], al, r).cpu()
        u, sv, vh = torch.linalg.svd(dw, full_matrices=False)  # (out, k), (k,), (k, in)
        k = min(out_rank, sv.shape[0])
        root_s = torch.sqrt(sv[:k])
        b_new = torch.zeros(dw.shape[0], out_rank, dtype=torch.float64)
        a_new = torch.zeros(out_rank, dw.shape[1], dtype=torch.float64)
        b_new[:, :k] = u[:, :k] * root_s / root_c
        a_new[:k] = root_s[:, None] * vh[:k] / root_c
        like_a, like_b = states[0][a_key], states[0][b_key]
        out[a_key] = a_new.to(like_a.device, like_a.dtype)
        out[b_key] = b_new.to(like_b.device, like_b.dtype)
        deltas[prefix] = dw.to(like_a.device, like_a.dtype)
    return out, deltas


def stack_lora(
    states: Sequence[StateDict],
    weights: Sequence[float],
    alphas: Sequence[float],
    ranks: Sequence[int],
    out_scale: float = 1.0,
) -> StateDict:
    """FLoRA stacking (Wang et al. 2024, "FLoRA: Federated Fine-Tuning Large
    Language Models with Heterogeneous Low-Rank Adaptations").

    With normalised weights ``p_i = w_i / sum_j w_j``::

        A = [p_1 (alpha_1/r_1) A_1; ...; p_n (alpha_n/r_n) A_n] / out_scale   (R, in)
        B = [B_1, ..., B_n]                                                  (out, R)

    with ``R = sum_i r_i``, so ``out_scale * B @ A = sum_i p_i dW_i`` exactly.
    Scale convention: by default (``out_scale = 1``) the product ``B @ A`` IS
    the mean update, i.e. load the result with ``lora_alpha = R`` (peft scale
    alpha/r = 1), or pass ``out_scale = lora_alpha / R``.
    """
    pairs = _check_hetero(states, weights, ranks, alphas)
    if not (math.isfinite(out_scale) and out_scale > 0):
        raise UserError(f"out_scale must be positive, got {out_scale}")
    out = _others_mean(states, weights, _lora_keys(pairs))
    total = float(sum(weights))
    for a_key, b_key in pairs.values():
        coeffs = [w / total * al / r / out_scale for w, al, r in zip(weights, alphas, ranks, strict=True)]
        a_stack = torch.cat([c * s[a_key].detach().double() for c, s in zip(coeffs, states, strict=True)], dim=0)
        b_stack = torch.cat([s[b_key].detach().double() for s in states], dim=1)
        like_a, like_b = states[0][a_key], states[0][b_key]
        out[a_key] = a_stack.to(like_a.device, like_a.dtype)
        out[b_key] = b_stack.to(like_b.device, like_b.dtype)
    return out


def zero_pad_average(
    states: Sequence[StateDict],
    weights: Sequence[float],
    ranks: Sequence[int],
    max_rank: int,
) -> StateDict:
    """HetLoRA-style baseline (Cho et al. 2024, "Heterogeneous LoRA for
    Federated Fine-tuning of On-Device Foundation Models").

    Pads each ``A_i`` with zero rows and each ``B_i`` with zero columns up to
    ``max_rank`` (``lora_rank.pad_rank``), then takes the weighted mean of A and of B
    separately. Like :func:`naive_average` this is not the mean update, and it ignores
    alpha. Works on any subset of the factors (FedSA-LoRA's A, FFA-LoRA's B); the
    matching truncation is ``lora_rank.slice_rank``.
    """
    if len(states) != len(ranks):
        raise UserError(f"{len(states)} states but {len(ranks)} ranks")
    if max(ranks) > max_rank:
        raise UserError(f"max_rank {max_rank} is smaller than a client rank {max(ranks)}")
    return weighted_mean([pad_rank(s, max_rank) for s in states], weights)
