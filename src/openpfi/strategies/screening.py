"""Update validation on the server: every upload is checked before it can reach the aggregate.

A ``ClientUpdate`` arrives with its delta as a payload of ``federation.compression``
(algorithms/wire.py). :func:`screen` decodes it and rejects, with a reason code and one line,

============= =================================================================================
code          when
============= =================================================================================
``keys``      the payload's tensor names are not exactly the shared adapter's
``shape``     a tensor's shape differs from the one the server expects for this client
``dtype``     a tensor's dtype differs from the payload format's (float32, float16, int8, int32)
``values``    a malformed payload: negative int8 scale, top-k indices out of range or repeated
``nonfinite`` NaN or infinite values in a tensor
``norm``      the decoded update's L2 norm exceeds ``federation.max_update_norm``
``examples``  a claimed example count below 1 or above ``data.max_examples``
============= =================================================================================

so that the aggregate is computed from the valid updates alone: one bad client never changes
the global adapter. The engines add the clients that never delivered an update (``raised``,
``timeout``, ``no_reply``) with the same record, ``{"client_id", "reason", "detail"}``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from openpfi.algorithms.state import l2_norm
from openpfi.algorithms.wire import Like, PayloadError, decode
from openpfi.client.messages import ClientUpdate

REASONS = ("keys", "shape", "dtype", "values", "nonfinite", "norm", "examples", "raised", "timeout", "no_reply")


@dataclass(frozen=True)
class ScreenRules:
    compression: str = "none"
    topk_fraction: float = 0.1
    max_update_norm: float = 0.0
    """0 = no bound."""
    max_examples: int = 0
    """0 = no bound on the claimed example count."""
    noise_std: float = 0.0
    """Per-coordinate std of the DP noise a client adds to its own update ("local" noise): the norm
    bound then grows by ``noise_std * (sqrt(d) + 6)``, the radius an honest noised update stays in
    with probability 1 - 1.5e-8 (Laurent & Massart 2000)."""


@dataclass(frozen=True)
class Rejection:
    client_id: str
    reason: str
    detail: str

    def record(self) -> dict[str, str]:
        return {"client_id": self.client_id, "reason": self.reason, "detail": self.detail}


def norm_bound(rules: ScreenRules, dim: int) -> float:
    """The largest L2 norm accepted for an update of ``dim`` values (inf when unbounded)."""
    if rules.max_update_norm <= 0:
        return math.inf
    return rules.max_update_norm + rules.noise_std * (math.sqrt(dim) + 6.0)


def screen_one(update: ClientUpdate, like: Like, rules: ScreenRules, secure: bool = False) -> ClientUpdate | Rejection:
    """The update with its delta decoded, or why it is rejected. ``secure``: under SecAgg+ only the
    metadata can be checked (the sum is checked when it is unmasked)."""
    cid = update.client_id
    n = update.num_examples
    if not isinstance(n, int) or n < 1 or (rules.max_examples and n > rules.max_examples):
        limit = f" or above data.max_examples = {rules.max_examples}" if rules.max_examples else ""
        return Rejection(cid, "examples", f"claims {n!r} examples, below 1{limit}")
    if secure:  # SecAgg+: the delta stays home, only its sum reaches the server
        return update
    bound = norm_bound(rules, sum(math.prod(shape) for shape, _ in like.values()))
    try:
        extra = {name: decode(state, "none", like) for name, state in sorted(update.extra.items())}
        if not update.delta and extra:  # FMGDA uploads per-objective deltas only
            delta = {}
        else:
            delta = decode(update.delta, rules.compression, like, rules.topk_fraction)
    except PayloadError as err:
        return Rejection(cid, err.code, str(err))
    for name, state in [("delta", delta), *extra.items()]:
        if state and l2_norm(state) > bound:
            what = "update" if name == "delta" else f"'{name}' delta"
            return Rejection(cid, "norm", f"{what} L2 norm above the bound {bound:.6g} (federation.max_update_norm)")
    return dataclasses.replace(update, delta=delta, extra=extra)


def screen(
    updates: Sequence[ClientUpdate], like_for: Callable[[str], Like], rules: ScreenRules, secure: bool = False
) -> tuple[list[ClientUpdate], list[Rejection]]:
    """(valid updates with decoded deltas, in order; rejections)."""
    valid: list[ClientUpdate] = []
    rejected: list[Rejection] = []
    for u in updates:
        out = screen_one(u, like_for(u.client_id), rules, secure)
        (rejected if isinstance(out, Rejection) else valid).append(out)  # type: ignore[arg-type]
    return valid, rejected
