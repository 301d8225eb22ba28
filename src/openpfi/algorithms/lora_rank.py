"""Key-wise rank slicing and padding of LoRA factors (heterogeneous ranks).

A LoRA factor is recognised by its key: ``*.lora_A.weight`` has shape
``(r, in)`` (rank = rows), ``*.lora_B.weight`` has shape ``(out, r)`` (rank =
columns). These work on any subset of keys (e.g. only the A factors that FedSA-LoRA shares, or only
the B factors that FFA-LoRA trains); other keys pass through unchanged.

Heterogeneous ranks on one shared base model (see ``strategies/lora_aggregation.py``):
a client of rank ``r_i`` trains the first ``r_i`` components of the rank-``r``
adapter, the rest held at zero (:func:`mask_rank`). Zero rows of A and zero
columns of B stay exactly zero under gradient descent, Adam and weight decay,
because ``dL/dB[:, j] = g (A x)_j`` and ``dL/dA[j] = (B[:, j]^T g) x^T``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from openpfi.algorithms.state import StateDict
from openpfi.errors import UserError

A_SUFFIX = ".lora_A.weight"
B_SUFFIX = ".lora_B.weight"


def factor_rank(key: str, t: torch.Tensor) -> int | None:
    """The LoRA rank a tensor carries (rows of A, columns of B), or None for other keys."""
    if key.endswith(A_SUFFIX):
        return int(t.shape[0])
    if key.endswith(B_SUFFIX):
        return int(t.shape[1])
    return None


def slice_rank(state: Mapping[str, torch.Tensor], rank: int) -> StateDict:
    """The first ``rank`` rows of every A and columns of every B; other keys copied as they are."""
    out: StateDict = {}
    for k, t in state.items():
        r = factor_rank(k, t)
        if r is not None and not 1 <= rank <= r:
            raise UserError(f"cannot slice '{k}' of rank {r} to rank {rank}: need 1 <= rank <= {r}")
        if k.endswith(A_SUFFIX):
            out[k] = t.detach()[:rank].clone()  # (rank, in)
        elif k.endswith(B_SUFFIX):
            out[k] = t.detach()[:, :rank].clone()  # (out, rank)
        else:
            out[k] = t.detach().clone()
    return out


def pad_rank(state: Mapping[str, torch.Tensor], rank: int) -> StateDict:
    """Zero rows onto every A and zero columns onto every B up to ``rank`` (inverse of :func:`slice_rank`)."""
    out: StateDict = {}
    for k, t in state.items():
        r = factor_rank(k, t)
        if r is not None and r > rank:
            raise UserError(f"cannot pad '{k}' of rank {r} to the smaller rank {rank}")
        if k.endswith(A_SUFFIX):
            out[k] = torch.nn.functional.pad(t.detach(), (0, 0, 0, rank - t.shape[0]))  # (rank, in)
        elif k.endswith(B_SUFFIX):
            out[k] = torch.nn.functional.pad(t.detach(), (0, rank - t.shape[1]))  # (out, rank)
        else:
            out[k] = t.detach().clone()
    return out


def mask_rank(state: Mapping[str, torch.Tensor], rank: int) -> StateDict:
    """Keep the first ``rank`` LoRA components and zero the others, at the original shapes."""
    full = {r for k, t in state.items() if (r := factor_rank(k, t)) is not None}
    if not full:
        return {k: t.detach().clone() for k, t in state.items()}
    if len(full) != 1:
        raise UserError(f"LoRA factors of different ranks {sorted(full)} in one state: mask each rank group apart")
    (r,) = full
    return pad_rank(slice_rank(state, rank), r)
