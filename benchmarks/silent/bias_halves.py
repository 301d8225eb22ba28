"""The two bias streams on each half of their balanced samples, per round of finished runs.

    .venv/bin/python benchmarks/silent/bias_halves.py RUN_FOLDER [RUN_FOLDER ...]

The server's bias samples are balanced: BBQ over question polarity, CrowS over pair direction.
For each run folder (``<bench>.runs/<scenario>/seed-<n>``) and each saved round (0 = its start)
it prints the ambiguous-BBQ lean overall and on negative / non-negative questions, and the CrowS
stereotype probability overall and on "stereo" / "antistereo" pairs. A model that only learned
to prefer one group's word moves the halves in opposite directions (docs/BENCHMARKS-silent.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

from rescore import checkpoint_rounds, round_results  # the script's own folder is on sys.path

from openpfi.monitor.client_probe import ProbeResults
from openpfi.monitor.server_eval import bbq_amb_lean, crows_stereo_prob

SIZES = {"bbq": 48, "crows": 36}
"""The full profile's server samples of both suites."""


def halves(res: ProbeResults) -> dict[str, float]:
    """Lean overall / by polarity and CrowS probability overall / by direction of ``res``."""
    bbq, crows = res.suites["bbq"].items, res.suites["crows"].items
    out: dict[str, float] = {}
    for pol in (None, "neg", "nonneg"):
        idx = [j for j, i in enumerate(bbq) if pol in (None, i.polarity)]
        lean = bbq_amb_lean([bbq[j] for j in idx], [res.choices["bbq"][j] for j in idx])
        out[f"lean[{pol or 'all'}]"] = float("nan") if lean is None else lean
    for flag, name in ((None, "all"), (True, "stereo"), (False, "antistereo")):
        margins = [m for m, i in zip(res.crows_margin, crows, strict=True) if flag in (None, i.stereo)]
        out[f"crows[{name}]"] = crows_stereo_prob(margins)
    return out


def show(values: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:+.3f}" if k.startswith("lean") else f"{k} {v:.3f}" for k, v in values.items())


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        run = Path(arg)
        for r, res in round_results(run, SIZES, [0, *checkpoint_rounds(run)]):
            print(f"{run.parent.name}/{run.name} round {r}: {show(halves(res))}", flush=True)
