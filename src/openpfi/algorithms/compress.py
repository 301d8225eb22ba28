"""Update compression: float16, int8, top-k, error feedback; honest byte counts.

- float16: cast (2 bytes per value).
- int8 (symmetric, per tensor): ``s = max|x| / 127``, ``q = round(x / s)`` in
  [-127, 127], ``x ~ q * s``; one float32 scale per tensor.
- top-k (per tensor): keep the ``k = ceil(fraction * numel)`` entries of
  largest magnitude, sent as values plus int32 flat indices (Aji & Heafield
  2017, "Sparse Communication for Distributed Gradient Descent").
- Error feedback (Seide et al. 2014; Karimireddy et al. 2019, "Error Feedback
  Fixes SignSGD"): compress ``x + e`` and carry ``e' = x + e - C(x + e)`` to
  the next round.

:func:`payload_nbytes` counts every tensor that travels (values, indices,
scales); serialization headers are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from openpfi.algorithms.state import StateDict, check_same_keys, nbytes
from openpfi.errors import UserError

Compressor = Callable[[StateDict], StateDict]
"""Maps a state to its dense reconstruction after a compress/decompress round trip."""


def _check_finite(state: Mapping[str, torch.Tensor]) -> None:
    for k, t in state.items():
        if not t.is_floating_point():
            raise UserError(f"can only compress float tensors, '{k}' is {t.dtype}")
        if not bool(torch.isfinite(t).all()):
            raise UserError(f"tensor '{k}' has NaN or inf values: cannot compress")


def to_float16(state: StateDict) -> StateDict:
    """Every tensor cast to float16 (values beyond +-65504 become inf: checked)."""
    _check_finite(state)
    out = {k: t.detach().to(torch.float16) for k, t in state.items()}
    for k, t in out.items():
        if not bool(torch.isfinite(t).all()):
            raise UserError(f"tensor '{k}' overflows float16 (|x| > 65504)")
    return out


def quantize_int8(
    state: StateDict,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Symmetric per-tensor int8: returns ``(q, scales)`` with ``x ~ q * scale``.

    ``scale = max|x| / 127`` (a 0-dim float32 tensor); an all-zero tensor gets
    scale 0 and q = 0, with no division by zero. Rounding is half-to-even.
    """
    _check_finite(state)
    q: dict[str, torch.Tensor] = {}
    scales: dict[str, torch.Tensor] = {}
    for k, t in state.items():
        x = t.detach().to(torch.float32)
        amax = float(x.abs().max()) if x.numel() else 0.0
        s = amax / 127.0
        scales[k] = torch.tensor(s, dtype=torch.float32, device=t.device)
        if s > 0:
            q[k] = torch.clamp(torch.round(x / scales[k]), -127, 127).to(torch.int8)
        else:
            q[k] = torch.zeros(t.shape, dtype=torch.int8, device=t.device)
    return q, scales


def dequantize_int8(
    q: Mapping[str, torch.Tensor],
    scales: Mapping[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
) -> StateDict:
    """``x = q * scale`` per tensor, in ``dtype``."""
    if set(q) != set(scales):
        raise UserError("int8 payload has different keys in values and scales")
    return {k: (q[k].to(torch.float32) * scales[k].to(torch.float32)).to(dtype) for k in q}


def top_k(state: StateDict, fraction: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-tensor top-k by magnitude: returns ``(values, indices)``.

    ``k = ceil(fraction * numel)`` (at least 1 for a non-empty tensor);
    ``indices`` are int32 positions in the flattened tensor, ordered by
    decreasing magnitude, ties broken by lower index.
    """
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"top-k fraction must be in (0, 1], got {fraction}")
    _check_finite(state)
    values: dict[str, torch.Tensor] = {}
    indices: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        flat = t.detach().reshape(-1)
        if flat.numel() >= 2**31:
            raise UserError(f"tensor '{key}' is too large for int32 top-k indices")
        k = min(flat.numel(), math.ceil(fraction * flat.numel()))
        order = torch.sort(flat.abs(), descending=True, stable=True).indices[:k]
        values[key] = flat[order].clone()
        indices[key] = order.to(torch.int32)
    return values, indices


def densify(
    values: Mapping[str, torch.Tensor],
    indices: Mapping[str, torch.Tensor],
    like: Mapping[str, torch.Tensor],
) -> StateDict:
    """Scatter sparse ``(values, indices)`` into zero tensors shaped like ``like``."""
    if set(values) != set(indices) or set(values) != set(like):
        raise UserError("sparse payload keys do not match the target state")
    out: StateDict = {}
    for key, t in like.items():
        flat = torch.zeros(t.numel(), dtype=values[key].dtype, device=values[key].device)
        flat[indices[key].long()] = values[key]
        out[key] = flat.reshape(t.shape)
    return out


def top_k_dense(state: StateDict, fraction: float) -> StateDict:
    """:func:`top_k` then :func:`densify`: the state with all but the top-k entries zeroed."""
    values, indices = top_k(state, fraction)
    return densify(values, indices, state)


def float16_roundtrip(state: StateDict) -> StateDict:
    """Compressor: cast to float16 and back to each tensor's dtype."""
    return {k: t.to(state[k].dtype) for k, t in to_float16(state).items()}


def int8_roundtrip(state: StateDict) -> StateDict:
    """Compressor: :func:`quantize_int8` then :func:`dequantize_int8`, back in each dtype."""
    q, scales = quantize_int8(state)
    return {k: t.to(state[k].dtype) for k, t in dequantize_int8(q, scales).items()}


def compress_with_error_feedback(
    state: StateDict, residual: StateDict | None, compressor: Compressor
) -> tuple[StateDict, StateDict]:
    """Error feedback: ``c = C(x + e)``, ``e' = x + e - c``; returns ``(c, e')``.

    ``residual`` is None (or zeros) on the first round. ``compressor`` returns
    the dense reconstruction the server will see, e.g. :func:`int8_roundtrip`
    or ``functools.partial(top_k_dense, fraction=0.1)``. Over rounds the sum of
    the sent ``c`` equals the sum of the ``x`` minus the final residual.
    """
    if residual is None:
        corrected = {k: t.detach().clone() for k, t in state.items()}
    else:
        keys = check_same_keys([state, residual])
        corrected = {k: state[k].detach() + residual[k].to(state[k].dtype) for k in keys}
    compressed = compressor(corrected)
    check_same_keys([corrected, compressed])
    compressed = {k: compressed[k].to(corrected[k].dtype) for k in corrected}
    new_residual = {k: corrected[k] - compressed[k] for k in corrected}
    return compressed, new_residual


def payload_nbytes(*parts: Mapping[str, torch.Tensor]) -> int:
    """Bytes on the wire of a payload made of tensor dicts, e.g.

    dense ``payload_nbytes(state)``, float16 ``payload_nbytes(to_float16(state))``,
    int8 ``payload_nbytes(q, scales)``, top-k ``payload_nbytes(values, indices)``.
    """
    return sum(nbytes(p) for p in parts)
