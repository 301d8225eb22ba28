"""Proximal regularizer for FedProx and Ditto.

``proximal_term(w, w_anchor, mu) = mu / 2 * sum_k ||w[k] - w_anchor[k]||_2^2``

- FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous
  Networks"): the client adds it to its loss with the global model as anchor.
- Ditto (Li et al. 2021, "Ditto: Fair and Robust Federated Learning Through
  Personalization"): the personal model ``w_p`` is pulled to the global model
  ``w_g`` with ``lambda / 2 * ||w_p - w_g||^2``; pass ``mu = lambda``.

The norm is SQUARED (its gradient is ``mu * (w - w_anchor)``); an unsquared
norm is a different, non-smooth regularizer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from openpfi.errors import UserError


def proximal_term(params: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor], mu: float) -> torch.Tensor:
    """``mu / 2 * sum_k ||params[k] - anchor[k]||^2`` as a 0-dim tensor.

    Differentiable with respect to ``params``; ``anchor`` is detached (and
    cast to each parameter's dtype and device). Every key of ``params`` must be
    in ``anchor`` with the same shape; extra anchor keys are ignored.
    """
    if not (math.isfinite(mu) and mu >= 0):
        raise UserError(f"proximal coefficient mu must be a non-negative number, got {mu}")
    if len(params) == 0:
        raise UserError("proximal_term got no parameters: pass the trainable (shared) tensors")
    total: torch.Tensor | None = None
    for k, w in params.items():
        if k not in anchor:
            raise UserError(f"proximal anchor has no tensor for parameter '{k}'")
        a = anchor[k].detach().to(device=w.device, dtype=w.dtype)
        if a.shape != w.shape:
            raise UserError(f"proximal anchor '{k}' has shape {tuple(a.shape)}, parameter has {tuple(w.shape)}")
        sq = torch.sum((w - a) ** 2)
        total = sq if total is None else total + sq.to(total.device)
    assert total is not None
    return 0.5 * mu * total
