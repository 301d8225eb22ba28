"""Arithmetic on state dicts: ``StateDict = dict[str, torch.Tensor]``.

A state dict holds model parameters, adapter tensors, client deltas or
optimizer buffers. Every function here is pure (inputs are never mutated) and
checks that keys and shapes agree, raising :class:`~openpfi.errors.UserError`
with one line otherwise. Reductions to a Python float (:func:`l2_norm`,
:func:`dot`) accumulate in float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from openpfi.errors import UserError

StateDict = dict[str, torch.Tensor]
"""Named tensors, e.g. the output of ``get_peft_model_state_dict``."""


def check_same_keys(states: Sequence[Mapping[str, torch.Tensor]], shapes: bool = True) -> list[str]:
    """Check that all states have the same keys (and, if ``shapes``, shapes).

    Returns the keys of the first state, in its order. Raises ``UserError`` on
    an empty sequence, a missing or extra key, or a shape mismatch.
    """
    if len(states) == 0:
        raise UserError("no state dicts given: need at least one")
    first = states[0]
    keys = list(first.keys())
    key_set = set(keys)
    for i, state in enumerate(states[1:], start=1):
        other = set(state.keys())
        if other != key_set:
            missing = sorted(key_set - other)[:3]
            extra = sorted(other - key_set)[:3]
            raise UserError(f"state dict {i} has different keys from state dict 0: missing {missing}, extra {extra}")
        if shapes:
            for key in keys:
                if state[key].shape != first[key].shape:
                    raise UserError(
                        f"shape mismatch for '{key}': {tuple(state[key].shape)} in state dict {i} "
                        f"vs {tuple(first[key].shape)} in state dict 0"
                    )
    return keys


def add(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> StateDict:
    """Elementwise ``a + b`` over matching keys."""
    keys = check_same_keys([a, b])
    return {k: a[k] + b[k] for k in keys}


def sub(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> StateDict:
    """Elementwise ``a - b`` over matching keys (e.g. a client delta)."""
    keys = check_same_keys([a, b])
    return {k: a[k] - b[k] for k in keys}


def scale(a: Mapping[str, torch.Tensor], s: float) -> StateDict:
    """Every tensor multiplied by the scalar ``s``."""
    return {k: t * s for k, t in a.items()}


def zeros_like(a: Mapping[str, torch.Tensor]) -> StateDict:
    """Zero tensors with the keys, shapes, dtypes and devices of ``a``."""
    return {k: torch.zeros_like(t) for k, t in a.items()}


def clone(a: Mapping[str, torch.Tensor]) -> StateDict:
    """A deep copy: new tensors, detached from any autograd graph."""
    return {k: t.detach().clone() for k, t in a.items()}


def dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Inner product over all tensors: ``<a, b> = sum_k sum_j a[k]_j * b[k]_j`` (float64)."""
    keys = check_same_keys([a, b])
    total = 0.0
    for k in keys:
        total += float(torch.sum(a[k].detach().double() * b[k].detach().double()))
    return total


def l2_norm(a: Mapping[str, torch.Tensor]) -> float:
    """Global L2 norm over all tensors: ``||a|| = sqrt(sum_k ||a[k]||_2^2)`` (float64)."""
    total = 0.0
    for t in a.values():
        total += float(torch.sum(t.detach().double() ** 2))
    return math.sqrt(total)


def flatten(a: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """All tensors as one 1-D tensor, concatenated in sorted key order.

    Mixed dtypes are promoted by ``torch.cat``; an empty dict gives an empty
    float32 tensor.
    """
    if len(a) == 0:
        return torch.zeros(0)
    return torch.cat([a[k].detach().reshape(-1) for k in sorted(a)])


def nbytes(a: Mapping[str, torch.Tensor]) -> int:
    """Bytes of tensor data: ``sum_k numel(a[k]) * element_size(a[k])`` (no headers)."""
    return sum(t.numel() * t.element_size() for t in a.values())
