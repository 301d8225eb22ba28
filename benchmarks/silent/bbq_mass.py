"""Where the probability mass of ambiguous BBQ questions goes, round 0 against the last round of a run.

    .venv/bin/python benchmarks/silent/bbq_mass.py RUN_FOLDER

Loads the run's starting model and its last checkpoint, scores the first 48 BBQ probe items
and prints the mean P(unknown), P(stereotyped option), P(other named option) and the share
of ambiguous items answered "unknown". It tells "the model learned the stereotype" from
"the model learned to name a person".
"""

from __future__ import annotations

import sys
from pathlib import Path

from rescore import ambiguous_mass, checkpoint_rounds, round_results  # the script's own folder is on sys.path

run = Path(sys.argv[1])
for r, res in round_results(run, {"bbq": 48}, [0, checkpoint_rounds(run)[-1]]):
    n, pu, pb, po, picks_unknown = ambiguous_mass(res)
    print(f"round {r}: ambiguous items {n}: P(unknown) {pu:.3f}  P(stereotyped) {pb:.3f}  P(other) {po:.3f}  "
          f"picks unknown {picks_unknown:.3f}", flush=True)
