"""A client's examples, tokenized only when its training or evaluation reads them.

A run with many clients (all 1,315 chitchat senders, a few sampled per round) would
otherwise tokenize and hold every client's data from the start. ``LazyEncoded`` keeps the
raw examples (which the partition holds anyway) and encodes an example the first time
it is read; ``release()`` drops the encodings again. ``len()`` needs no tokenizing, and
an example encodes the same whenever it is encoded, so training on a lazy sequence is
identical to training on the list of its encodings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

from openpfi.data.tokenize import Encoded


class LazyEncoded(Sequence[Encoded]):
    """``[encode(x) for x in items]``, computed element by element on first access."""

    def __init__(self, items: Sequence[Any], encode: Callable[[Any], Encoded]):
        self.items = list(items)
        self.encode = encode
        self._done: dict[int, Encoded] = {}

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, i: int) -> Encoded: ...

    @overload
    def __getitem__(self, i: slice) -> LazyEncoded: ...

    def __getitem__(self, i: int | slice) -> Encoded | LazyEncoded:
        if isinstance(i, slice):
            return LazyEncoded(self.items[i], self.encode)
        if i < 0:
            i += len(self.items)
        if not 0 <= i < len(self.items):
            raise IndexError(f"example {i} of {len(self.items)}")
        got = self._done.get(i)
        if got is None:
            got = self._done[i] = self.encode(self.items[i])
        return got

    def __iter__(self) -> Iterator[Encoded]:
        return (self[i] for i in range(len(self.items)))

    @property
    def held(self) -> list[Encoded]:
        """The encodings held now (none after ``release``)."""
        return list(self._done.values())

    @property
    def encoded(self) -> int:
        """How many examples are encoded and held now."""
        return len(self._done)

    def release(self) -> None:
        """Drop the encodings (the raw examples stay)."""
        self._done.clear()
