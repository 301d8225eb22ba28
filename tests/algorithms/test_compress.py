"""Tests for openpfi.algorithms.compress."""

from __future__ import annotations

import functools

import pytest
import torch

from openpfi.algorithms.compress import (
    compress_with_error_feedback,
    dequantize_int8,
    float16_roundtrip,
    int8_roundtrip,
    payload_nbytes,
    quantize_int8,
    to_float16,
    top_k,
    top_k_dense,
)
from openpfi.errors import UserError


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _update() -> dict[str, torch.Tensor]:
    return {
        "w": _t(0.1, -3.0, 2.0, 0.5),
        "b": _t(1.0),
        "c": torch.tensor([[1.0, -1.0], [0.0, 0.5]]),
    }


def test_float16_values_and_bytes() -> None:
    # Prepare
    update = _update()
    # Execute
    half = to_float16(update)
    # Assert: 7 values of 2 bytes instead of 4
    assert all(t.dtype == torch.float16 for t in half.values())
    assert torch.equal(half["c"], torch.tensor([[1.0, -1.0], [0.0, 0.5]], dtype=torch.float16))
    assert payload_nbytes(update) == 36 and payload_nbytes(half) == 18
    assert float16_roundtrip(update)["w"].dtype == torch.float32
    with pytest.raises(UserError, match="overflows float16"):
        to_float16({"w": _t(1e5)})


def test_int8_exact_values() -> None:
    # Prepare: scales 1, 2 and 0 (all-zero tensor)
    update = {"w": _t(127.0, -63.0, 0.5), "b": _t(-254.0, 3.0), "c": _t(0.0, 0.0)}
    # Execute
    q, scales = quantize_int8(update)
    back = dequantize_int8(q, scales)
    # Assert: round half to even (0.5 -> 0, 1.5 -> 2)
    assert torch.equal(q["w"], torch.tensor([127, -63, 0], dtype=torch.int8))
    assert torch.equal(q["b"], torch.tensor([-127, 2], dtype=torch.int8))
    assert torch.equal(q["c"], torch.tensor([0, 0], dtype=torch.int8))
    assert [float(scales[k]) for k in ("w", "b", "c")] == [1.0, 2.0, 0.0]
    assert torch.equal(back["w"], _t(127.0, -63.0, 0.0)) and torch.equal(back["b"], _t(-254.0, 4.0))
    assert torch.equal(back["c"], _t(0.0, 0.0))
    # 7 int8 values + 3 float32 scales
    assert payload_nbytes(q, scales) == 7 + 12


def test_int8_error_is_at_most_half_a_step() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(0)
    update = {
        "w": torch.randn(50, generator=gen),
        "b": torch.randn(3, generator=gen),
        "c": torch.randn(2, 2, generator=gen),
    }
    # Execute
    q, scales = quantize_int8(update)
    back = dequantize_int8(q, scales)
    # Assert
    for k, x in update.items():
        assert float((x - back[k]).abs().max()) <= float(scales[k]) / 2 + 1e-7
        assert float(back[k].abs().max()) == pytest.approx(float(x.abs().max()), rel=1e-6)


def test_top_k_values_indices_dense_and_bytes() -> None:
    # Prepare
    update = _update()
    # Execute
    values, indices = top_k(update, 0.5)
    dense = top_k_dense(update, 0.5)
    # Assert: k = ceil(0.5 n); ties (|1| = |-1|) by lower index
    assert torch.equal(values["w"], _t(-3.0, 2.0)) and torch.equal(
        indices["w"], torch.tensor([1, 2], dtype=torch.int32)
    )
    assert torch.equal(values["b"], _t(1.0)) and torch.equal(indices["b"], torch.tensor([0], dtype=torch.int32))
    assert torch.equal(values["c"], _t(1.0, -1.0)) and torch.equal(
        indices["c"], torch.tensor([0, 1], dtype=torch.int32)
    )
    assert torch.equal(dense["w"], _t(0.0, -3.0, 2.0, 0.0))
    assert torch.equal(dense["c"], torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    # 5 float32 values + 5 int32 indices
    assert payload_nbytes(values, indices) == 40
    with pytest.raises(UserError, match="fraction"):
        top_k(update, 0.0)


def test_error_feedback_two_rounds_top_k() -> None:
    # Prepare: keep 1 of 4 entries of 'w' per round
    update = _update()
    compressor = functools.partial(top_k_dense, fraction=0.25)
    # Execute
    sent1, res1 = compress_with_error_feedback(update, None, compressor)
    sent2, res2 = compress_with_error_feedback(update, res1, compressor)
    # Assert
    assert torch.equal(sent1["w"], _t(0.0, -3.0, 0.0, 0.0)) and torch.equal(res1["w"], _t(0.1, 0.0, 2.0, 0.5))
    assert torch.equal(sent2["w"], _t(0.0, 0.0, 4.0, 0.0)) and torch.equal(res2["w"], _t(0.2, -3.0, 0.0, 1.0))
    assert torch.equal(sent1["c"], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    # invariant: what was sent plus what is owed equals what was produced
    for k in update:
        torch.testing.assert_close(sent1[k] + sent2[k] + res2[k], 2 * update[k])


def test_error_feedback_int8_residual_is_small() -> None:
    # Prepare
    update = {"w": _t(1.0, 0.3), "b": _t(-0.7), "c": _t(0.0)}
    # Execute
    sent, residual = compress_with_error_feedback(update, None, int8_roundtrip)
    # Assert: residual = x - Q(x), bounded by half a quantisation step
    for k, x in update.items():
        torch.testing.assert_close(sent[k] + residual[k], x)
    assert float(residual["w"].abs().max()) <= (1.0 / 127) / 2 + 1e-7
    assert float(residual["c"]) == 0.0
    with pytest.raises(UserError, match="different keys"):
        compress_with_error_feedback(update, {"w": _t(0.0, 0.0)}, int8_roundtrip)
