"""An update as it travels: one flat dict of tensors per compression kind, and its checked decoding.

=========== ================================================ ==============================
kind        tensors sent for each adapter tensor ``k``        bytes per value
=========== ================================================ ==============================
``none``    ``k``: float32                                    4
``fp16``    ``k``: float16                                    2
``int8``    ``k``: int8, ``k::scale``: float32 (0-dim)          1 (+ 4 per tensor)
``topk``    ``k::values``: float32 (m,), ``k::indices``: int32 (m,)   8 per kept value
=========== ================================================ ==============================

with ``m = ceil(topk_fraction * numel)`` (``algorithms/compress.py``). :func:`decode` is the
server's only way in: every key, dtype, shape, scale and index is checked against what the
server expects, and any departure raises :class:`PayloadError` naming it, so a malformed
upload is rejected, never half-read. :func:`encode_with_feedback` is the client side with
error feedback: it compresses ``x + e`` and keeps ``e' = x + e - decode(encode(x + e))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from openpfi.algorithms.compress import quantize_int8, to_float16, top_k
from openpfi.algorithms.state import StateDict, check_same_keys
from openpfi.errors import UserError

KINDS = ("none", "fp16", "int8", "topk")
SCALE, VALUES, INDICES = "::scale", "::values", "::indices"


class PayloadError(UserError):
    """A received payload that does not decode: ``code`` is one of keys, shape, dtype, nonfinite, values."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


Like = Mapping[str, tuple[tuple[int, ...], torch.dtype]]
"""What the server expects: adapter tensor name -> (shape, dtype)."""


def like_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(t.shape), t.dtype) for k, t in state.items()}


def wire_keys(kind: str, like: Like) -> set[str]:
    """The keys a payload of ``kind`` must have, exactly."""
    if kind in ("none", "fp16"):
        return set(like)
    if kind == "int8":
        return set(like) | {k + SCALE for k in like}
    if kind == "topk":
        return {k + VALUES for k in like} | {k + INDICES for k in like}
    raise UserError(f"unknown compression {kind!r}; use one of {list(KINDS)}")


def topk_count(numel: int, fraction: float) -> int:
    return min(numel, math.ceil(fraction * numel)) if numel else 0


def encode(state: StateDict, kind: str, topk_fraction: float = 0.1) -> StateDict:
    """The payload of ``state`` (float tensors) for ``kind``."""
    if kind == "none":
        return {k: t.detach().clone() for k, t in state.items()}
    if kind == "fp16":
        return to_float16(state)
    if kind == "int8":
        q, scales = quantize_int8(state)
        return {**q, **{k + SCALE: s for k, s in scales.items()}}
    if kind == "topk":
        values, indices = top_k(state, topk_fraction)
        return {**{k + VALUES: v.float() for k, v in values.items()}, **{k + INDICES: i for k, i in indices.items()}}
    raise UserError(f"unknown compression {kind!r}; use one of {list(KINDS)}")


def _expect(cond: bool, code: str, message: str) -> None:
    if not cond:
        raise PayloadError(code, message)


def _finite(t: torch.Tensor, key: str) -> None:
    _expect(bool(torch.isfinite(t).all()), "nonfinite", f"tensor '{key}' has NaN or infinite values")


def _decode_one(payload: Mapping[str, torch.Tensor], kind: str, key: str, shape: tuple[int, ...],
                dtype: torch.dtype, topk_fraction: float) -> torch.Tensor:
    if kind in ("none", "fp16"):
        t = payload[key]
        want = dtype if kind == "none" else torch.float16
        _expect(t.dtype == want, "dtype", f"tensor '{key}' is {t.dtype}, expected {want}")
        _expect(tuple(t.shape) == shape, "shape", f"tensor '{key}' has shape {tuple(t.shape)}, expected {shape}")
        _finite(t, key)
        return t.to(dtype)
    if kind == "int8":
        q, s = payload[key], payload[key + SCALE]
        _expect(q.dtype == torch.int8, "dtype", f"tensor '{key}' is {q.dtype}, expected torch.int8")
        _expect(s.dtype == torch.float32 and s.numel() == 1, "dtype", f"scale of '{key}' must be one float32")
        _expect(tuple(q.shape) == shape, "shape", f"tensor '{key}' has shape {tuple(q.shape)}, expected {shape}")
        _finite(s, key + SCALE)
        _expect(float(s) >= 0, "values", f"scale of '{key}' is negative")
        _expect(bool((q != -128).all()), "values", f"tensor '{key}' uses -128, outside the symmetric int8 range")
        return (q.to(torch.float32) * s.reshape(()).to(torch.float32)).to(dtype)
    values, idx = payload[key + VALUES], payload[key + INDICES]
    numel = math.prod(shape)
    m = topk_count(numel, topk_fraction)
    _expect(values.dtype == torch.float32, "dtype", f"values of '{key}' are {values.dtype}, expected torch.float32")
    _expect(idx.dtype == torch.int32, "dtype", f"indices of '{key}' are {idx.dtype}, expected torch.int32")
    _expect(tuple(values.shape) == (m,) and tuple(idx.shape) == (m,), "shape",
            f"'{key}' sends {tuple(values.shape)} values and {tuple(idx.shape)} indices, expected {m} of each")
    _finite(values, key + VALUES)
    flat_idx = idx.long()
    _expect(bool(((flat_idx >= 0) & (flat_idx < numel)).all()), "values", f"indices of '{key}' lie outside 0..{numel - 1}")
    _expect(int(torch.unique(flat_idx).numel()) == m, "values", f"indices of '{key}' repeat")
    flat = torch.zeros(numel, dtype=torch.float32)
    flat[flat_idx] = values
    return flat.reshape(shape).to(dtype)


def decode(payload: Mapping[str, torch.Tensor], kind: str, like: Like, topk_fraction: float = 0.1) -> StateDict:
    """The dense update a payload stands for, every part checked against ``like`` (``PayloadError`` otherwise)."""
    want = wire_keys(kind, like)
    got = set(payload)
    if got != want:
        missing, extra = sorted(want - got)[:2], sorted(got - want)[:2]
        raise PayloadError("keys", f"payload keys differ from the shared adapter's: missing {missing}, extra {extra}")
    for k, t in payload.items():
        _expect(isinstance(t, torch.Tensor), "dtype", f"'{k}' is not a tensor")
    return {k: _decode_one(payload, kind, k, shape, dtype, topk_fraction) for k, (shape, dtype) in like.items()}


def encode_with_feedback(
    state: StateDict, residual: StateDict | None, kind: str, topk_fraction: float = 0.1
) -> tuple[StateDict, StateDict | None]:
    """Client side: ``payload = encode(x + e)``; ``e' = x + e - decode(payload)`` (None for ``none``).

    Error feedback (Seide et al. 2014; Karimireddy et al. 2019): what compression drops this round is
    added to the next round's update, so over rounds the sum sent equals the sum of the updates
    minus the last residual.
    """
    if kind == "none":
        return encode(state, kind), None
    if residual is None:
        corrected = {k: t.detach().float() for k, t in state.items()}
    else:
        keys = check_same_keys([state, residual])
        corrected = {k: state[k].detach().float() + residual[k].float() for k in keys}
    payload = encode(corrected, kind, topk_fraction)
    sent = decode(payload, kind, like_of(corrected), topk_fraction)
    return payload, {k: corrected[k] - sent[k] for k in corrected}
