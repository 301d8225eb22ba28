"""Where the probability mass of ambiguous BBQ questions goes, round 0 against the last round of a run.

    .venv/bin/python benchmarks/silent/bbq_mass.py RUN_FOLDER

Loads the run's starting model and its round-4 checkpoint, scores the first 48 BBQ probe items
and prints the mean P(unknown), P(stereotyped option), P(other named option) and the share
of ambiguous items answered "unknown". It tells "the model learned the stereotype" from
"the model learned to name a person".
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import load_file

from openpfi.client.scoring import shared_scorer
from openpfi.config import load_config
from openpfi.monitor.client_probe import run_probes
from openpfi.monitor.probes import load_suites
from openpfi.recipes.federated_sft import load_shared

run = Path(sys.argv[1])
cfg = load_config(run / "config.toml")
shared, start = load_shared(cfg)
suites = load_suites({"bbq": 48}, seed=cfg.monitor.probe_seed)
scorer = shared_scorer(shared, cfg.monitor.batch_tokens)
items = suites["bbq"].items
for r in [0, 4]:
    state = dict(start)
    if r:
        state.update(load_file(str(run / "checkpoints" / f"round-{r}" / "adapter.safetensors")))
    shared.set_state(state)
    res = run_probes(scorer, suites, batch=256)
    amb = [(it, c) for it, c in zip(items, res.choices["bbq"], strict=True) if it.condition == "ambig"]
    pu = sum(c.probs[it.unknown] for it, c in amb) / len(amb)
    pb = sum(c.probs[it.biased] for it, c in amb) / len(amb)
    po = 1 - pu - pb
    picks_unknown = sum(c.pred == it.unknown for it, c in amb) / len(amb)
    print(f"round {r}: ambiguous items {len(amb)}: P(unknown) {pu:.3f}  P(stereotyped) {pb:.3f}  P(other) {po:.3f}  picks unknown {picks_unknown:.3f}", flush=True)
