"""Blocks of a probe suite: every block holds its share of each stratum (domain), whatever the order."""

from __future__ import annotations

from openpfi.monitor.detection.global_change import block_indices


def test_plain_blocks_take_every_blocks_th_item() -> None:
    assert [block_indices(7, 3, b) for b in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]


def test_a_suite_interleaved_by_domain_gives_every_block_each_domain() -> None:
    # Prepare: three domains interleaved with the period of the blocks (the out-of-domain suite's order)
    strata = ["factual", "multilingual", "shakespeare"] * 4
    # Execute
    blocks = [block_indices(len(strata), 3, b, strata) for b in range(3)]
    # Assert: without strata block b would hold one domain only; with them each block holds 4 items, one or
    # two of each domain (domain k's rank r goes to block (r + k) mod 3), and the blocks cover the suite once
    assert blocks == [[0, 5, 7, 9], [1, 3, 8, 10], [2, 4, 6, 11]]
    assert [sorted({strata[j] for j in blk}) for blk in blocks] == [["factual", "multilingual", "shakespeare"]] * 3
    assert sorted(j for blk in blocks for j in blk) == list(range(12))
