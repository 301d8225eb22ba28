"""LazyEncoded: encodes an example when it is first read, holds it until release()."""

from __future__ import annotations

import pytest

from openpfi.data.lazy import LazyEncoded
from openpfi.data.tokenize import Encoded


def _counting() -> tuple[list[int], LazyEncoded]:
    calls: list[int] = []

    def encode(x: int) -> Encoded:
        calls.append(x)
        return Encoded((x, x + 1), (x, x + 1))

    return calls, LazyEncoded([10, 20, 30], encode)


def test_len_encodes_nothing_and_reads_encode_once() -> None:
    # Prepare
    calls, lazy = _counting()
    # Execute
    n = len(lazy)
    first, again, last = lazy[1], lazy[1], lazy[-1]
    # Assert
    assert n == 3 and calls == [20, 30]
    assert first is again and first.input_ids == (20, 21) and last.input_ids == (30, 31)
    assert lazy.encoded == 2


def test_release_drops_encodings_and_reencodes_the_same() -> None:
    calls, lazy = _counting()
    before = list(lazy)
    lazy.release()
    assert lazy.encoded == 0
    assert list(lazy) == before and calls == [10, 20, 30, 10, 20, 30]


def test_slice_stays_lazy_and_bad_index_raises() -> None:
    calls, lazy = _counting()
    head = lazy[:2]
    assert isinstance(head, LazyEncoded) and len(head) == 2 and calls == []
    with pytest.raises(IndexError):
        lazy[3]
