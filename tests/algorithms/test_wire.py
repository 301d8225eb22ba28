"""The wire format of an update: exact payloads, checked decoding, error feedback."""

from __future__ import annotations

import pytest
import torch

from openpfi.algorithms.state import nbytes
from openpfi.algorithms.wire import PayloadError, decode, encode, encode_with_feedback, like_of


def _delta() -> dict[str, torch.Tensor]:
    return {"a": torch.tensor([[1.0, -2.0], [0.5, 4.0]]), "b": torch.tensor([0.0, 3.0, -1.0])}


def test_payloads_and_bytes() -> None:
    # Prepare: 7 float32 values (28 bytes)
    d = _delta()
    like = like_of(d)
    # Execute / Assert: fp16 halves, int8 quarters (+ one float32 scale per tensor), top-k sends 8 bytes per value
    assert nbytes(encode(d, "fp16")) == 14
    int8 = encode(d, "int8")
    assert nbytes(int8) == 7 + 2 * 4
    assert torch.equal(int8["a"], torch.tensor([[32, -64], [16, 127]], dtype=torch.int8))  # scale 4/127
    top = encode(d, "topk", 0.5)  # ceil(0.5 * 4) = 2 of a, ceil(0.5 * 3) = 2 of b
    assert torch.equal(top["a::indices"], torch.tensor([3, 1], dtype=torch.int32))
    assert nbytes(top) == 4 * 8
    assert torch.equal(decode(top, "topk", like, 0.5)["b"], torch.tensor([0.0, 3.0, -1.0]))
    assert torch.equal(decode(encode(d, "none"), "none", like)["a"], d["a"])


@pytest.mark.parametrize(
    ("kind", "edit", "code"),
    [
        ("none", lambda p: p.pop("b"), "keys"),
        ("none", lambda p: p.update(x=torch.zeros(1)), "keys"),
        ("none", lambda p: p.update(a=torch.zeros(3, 2)), "shape"),
        ("none", lambda p: p.update(a=p["a"].double()), "dtype"),
        ("none", lambda p: p["a"].__setitem__((0, 0), float("nan")), "nonfinite"),
        ("fp16", lambda p: p.update(a=p["a"].float()), "dtype"),
        ("int8", lambda p: p.update({"a::scale": torch.tensor(-1.0)}), "values"),
        ("int8", lambda p: p["a"].__setitem__((0, 0), -128), "values"),
        ("topk", lambda p: p["a::indices"].__setitem__(0, 99), "values"),
        ("topk", lambda p: p["a::indices"].__setitem__(0, 1), "values"),
        ("topk", lambda p: p.update({"a::values": torch.zeros(3)}), "shape"),
    ],
)
def test_malformed_payloads_are_named(kind: str, edit, code: str) -> None:
    # Prepare
    payload = encode(_delta(), kind, 0.5)
    edit(payload)
    # Execute / Assert
    with pytest.raises(PayloadError) as err:
        decode(payload, kind, like_of(_delta()), 0.5)
    assert err.value.code == code


def test_error_feedback_sends_the_sum_minus_the_residual() -> None:
    # Prepare: three rounds of the same update, top-1 of 4 values
    x = {"w": torch.tensor([4.0, 3.0, 2.0, 1.0])}
    residual = None
    sent = torch.zeros(4)
    # Execute
    for _ in range(3):
        payload, residual = encode_with_feedback(x, residual, "topk", 0.25)
        sent += decode(payload, "topk", like_of(x), 0.25)["w"]
    # Assert: round 1 sends 4 (index 0), round 2 the corrected [4, 6, 4, 2] -> 6 (index 1), round 3 [8, 3, 6, 3] -> 8
    assert torch.equal(sent, torch.tensor([12.0, 6.0, 0.0, 0.0]))
    assert residual is not None and torch.equal(sent + residual["w"], 3 * x["w"])
