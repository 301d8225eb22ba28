"""Partitioners: determinism, disjoint splits, sizes, skew, natural groups, errors."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from openpfi.data.partition import PARTITIONS, client_names, make_clients, slug
from openpfi.data.sources import load_examples
from openpfi.data.types import ClientData, Example
from openpfi.errors import UserError


def _pool(n: int = 2000, groups: int = 40, labels: int = 10) -> list[Example]:
    """``n`` distinct examples; group ``i % groups`` has ``n / groups`` examples."""
    return [
        Example(f"p{i}", f"r{i}", f"user {i % groups}", f"topic{i % labels}")
        for i in range(n)
    ]


def _summary(clients: list[ClientData]) -> list[tuple[str, list[str], list[str]]]:
    return [
        (c.client_id, [e.prompt for e in c.train], [e.prompt for e in c.heldout])
        for c in clients
    ]


def _label_entropy(client: ClientData) -> float:
    counts = Counter(e.label for e in client.train + client.heldout)
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values())


@pytest.mark.parametrize("method", PARTITIONS)
def test_same_seed_same_clients_other_seed_other_clients(method: str) -> None:
    pool = _pool()
    first = make_clients(pool, method=method, num_clients=6, seed=3, max_examples=50)
    again = make_clients(pool, method=method, num_clients=6, seed=3, max_examples=50)
    other = make_clients(pool, method=method, num_clients=6, seed=4, max_examples=50)
    assert _summary(first) == _summary(again)
    assert _summary(first) != _summary(other)


@pytest.mark.parametrize("method", PARTITIONS)
def test_splits_are_disjoint_capped_and_non_empty(method: str) -> None:
    pool = _pool()
    clients = make_clients(
        pool,
        method=method,
        num_clients=8,
        seed=0,
        max_examples=40,
        heldout_fraction=0.25,
    )
    assert len(clients) == 8
    assert len({c.client_id for c in clients}) == 8
    seen: list[Example] = []
    for c in clients:
        n = len(c.train) + len(c.heldout)
        assert 2 <= n <= 40
        assert len(c.heldout) == min(n - 1, max(1, int(n * 0.25 + 0.5)))
        assert len(c.train) >= 1
        assert not set(c.train) & set(c.heldout)
        seen += c.train + c.heldout
    assert len(seen) == len(set(seen))  # no example given to two clients
    assert set(seen) <= set(pool)


def test_heldout_sizes_exact() -> None:
    # 10 examples, fraction 0.2 -> 2 held out; 2 examples -> 1 and 1; 3 examples, 0.9 -> 2 and 1.
    one_group = [Example(f"p{i}", "r", "g") for i in range(10)]
    [c] = make_clients(
        one_group, method="natural", num_clients=1, seed=0, min_examples=1
    )
    assert (len(c.train), len(c.heldout)) == (8, 2)
    [c] = make_clients(
        one_group[:2], method="natural", num_clients=1, seed=0, min_examples=1
    )
    assert (len(c.train), len(c.heldout)) == (1, 1)
    [c] = make_clients(
        one_group[:3], method="iid", num_clients=1, seed=0, heldout_fraction=0.9
    )
    assert (len(c.train), len(c.heldout)) == (1, 2)


def test_natural_takes_single_example_groups_without_heldout() -> None:
    # Prepare: groups of 1, 2 and 5 examples; min_examples = 1 takes all three
    pool = [Example(f"{g}{i}", "r", g) for g, n in (("a", 1), ("b", 2), ("c", 5)) for i in range(n)]
    # Execute
    clients = make_clients(pool, method="natural", num_clients=3, seed=0, min_examples=1)
    # Assert: 1 -> (1 train, 0 held out), 2 -> (1, 1), 5 -> (4, 1)
    assert [(c.client_id, len(c.train), len(c.heldout)) for c in clients] == [("a", 1, 0), ("b", 1, 1), ("c", 4, 1)]


def test_iid_deals_equal_shares_from_a_bounded_pool() -> None:
    clients = make_clients(
        _pool(), method="iid", num_clients=5, seed=0, max_examples=30
    )
    assert [len(c.train) + len(c.heldout) for c in clients] == [30] * 5
    assert (
        [c.client_id for c in clients]
        == client_names(5)
        == [f"client-00{k}" for k in range(5)]
    )
    small = make_clients(_pool(23), method="iid", num_clients=5, seed=0)
    assert sorted(len(c.train) + len(c.heldout) for c in small) == [4, 4, 5, 5, 5]


def test_natural_respects_groups_and_min_examples() -> None:
    pool = _pool(2000, groups=40) + [
        Example(f"x{i}", "r", "tiny group") for i in range(5)
    ]
    clients = make_clients(
        pool, method="natural", num_clients=10, seed=1, min_examples=10, max_examples=30
    )
    for c in clients:
        groups = {e.group for e in c.train + c.heldout}
        assert len(groups) == 1
        assert c.client_id == slug(groups.pop())
        assert len(c.train) + len(c.heldout) == 30  # each group has 50, capped to 30
    assert "tiny-group" not in {c.client_id for c in clients}
    assert [c.client_id for c in clients] == sorted(c.client_id for c in clients)


def test_natural_too_few_groups_says_how_many() -> None:
    with pytest.raises(
        UserError,
        match=r"only 40 of 40 groups have at least 10 examples.*lower data.num_clients",
    ):
        make_clients(_pool(2000, groups=40), method="natural", num_clients=41, seed=0)
    with pytest.raises(
        UserError, match=r"only 0 of 40 groups have at least 51 examples"
    ):
        make_clients(
            _pool(2000, groups=40),
            method="natural",
            num_clients=1,
            seed=0,
            min_examples=51,
        )


def test_natural_ids_are_folder_safe_and_unique() -> None:
    pool = [
        Example(f"p{i}", "r", g)
        for g in ("Bob Smith", "bob-smith", "李雷")
        for i in range(4)
    ]
    ids = [
        c.client_id
        for c in make_clients(
            pool, method="natural", num_clients=3, seed=0, min_examples=2
        )
    ]
    assert len(set(ids)) == 3
    assert "bob-smith" in ids
    assert all(
        cid and set(cid) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-")
        for cid in ids
    )


def test_slug() -> None:
    assert slug("hamlet::HAM") == "hamlet-ham"
    assert (
        slug("549cc1d1-270e-4a53-b561-133a8d0086b4")
        == "549cc1d1-270e-4a53-b561-133a8d0086b4"
    )
    assert slug("../..").startswith("group-")
    long = slug("x" * 100)
    assert len(long) == 69 and long.startswith("x" * 60 + "-")


def test_dirichlet_small_alpha_skews_labels() -> None:
    pool = _pool(4000, labels=10)

    def mean_entropy(alpha: float) -> float:
        clients = make_clients(
            pool,
            method="dirichlet",
            num_clients=10,
            seed=0,
            alpha=alpha,
            max_examples=400,
        )
        return float(np.mean([_label_entropy(c) for c in clients]))

    skewed, mild, near_iid = mean_entropy(0.05), mean_entropy(1.0), mean_entropy(1000.0)
    # Measured (seed 0): 0.82, 1.99, 2.30; log(10) = 2.30 is a uniform label mix.
    assert skewed < 1.2
    assert 1.7 < mild < 2.2 < near_iid
    assert near_iid > 0.95 * math.log(10)


def test_dirichlet_falls_back_to_group_as_label() -> None:
    pool = [Example(f"p{i}", "r", f"g{i % 4}") for i in range(400)]
    clients = make_clients(
        pool, method="dirichlet", num_clients=4, seed=0, alpha=0.01, max_examples=400
    )
    assert max(len({e.group for e in c.train + c.heldout}) for c in clients) <= 2


def test_quantity_skews_sizes() -> None:
    pool = _pool(4000)
    skewed = make_clients(
        pool,
        method="quantity",
        num_clients=10,
        seed=0,
        quantity_sigma=1.5,
        max_examples=200,
    )
    sizes = np.array([len(c.train) + len(c.heldout) for c in skewed])
    assert sizes.max() == 200
    assert sizes.std() / sizes.mean() > 0.5
    flat = make_clients(
        pool,
        method="quantity",
        num_clients=10,
        seed=0,
        quantity_sigma=0.0,
        max_examples=200,
    )
    assert {len(c.train) + len(c.heldout) for c in flat} == {200}


def test_partition_of_real_source() -> None:
    examples = load_examples("chatterbot").examples
    clients = make_clients(examples, method="natural", num_clients=5, seed=0)
    assert all(
        c.client_id == c.train[0].group for c in clients
    )  # languages are already slugs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"method": "sharded"},
            "unknown partition 'sharded'; choose one of: natural, iid, dirichlet, quantity",
        ),
        ({"heldout_fraction": 1.0}, r"data.heldout_fraction must be in \(0, 1\)"),
        ({"num_clients": 0}, "data.num_clients must be >= 1"),
        ({"max_examples": 1}, "data.max_examples must be >= 2"),
        ({"alpha": 0.0}, "data.alpha must be > 0"),
        ({"quantity_sigma": -1.0}, "data.quantity_sigma must be >= 0"),
        ({"num_clients": 6}, "11 examples cannot give 6 clients at least 2 each"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict = {"method": "iid", "num_clients": 2, "seed": 0, **kwargs}
    with pytest.raises(UserError, match=message):
        make_clients(_pool(11), **args)


def test_empty_input_and_starved_dirichlet_client() -> None:
    with pytest.raises(UserError, match="no examples to partition"):
        make_clients([], method="iid", num_clients=1, seed=0)
    one_label = [Example(f"p{i}", "r", "g") for i in range(4)]
    with pytest.raises(
        UserError,
        match=r"client client-00\d got fewer than 2 examples.*raise data.alpha",
    ):
        make_clients(one_label, method="dirichlet", num_clients=2, seed=0, alpha=0.001)
