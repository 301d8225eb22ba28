"""How unevenly do public probe items move when a model changes? The planning constants of the paired tests.

    python benchmarks/silent/item_spread.py [--out item_spread.json]

Scores the bundled model's base and its safety-tuned adapter (the silent benchmark's, built once and
cached) on up to 480 items of every probe suite and prints, per statistic the server tests on the global
model, the items' spread at round 0 (sd_0), the mean change between the two models and the spread of the
per-item changes (sd_d). Where the adapter did not move a metric, sd_d / sd_0 is the churn a model change
leaves on unchanged items; where it did, sd_d / |change| is how unevenly a change moves the items. These set
``monitor/detection/paired_power.py``'s ``CHURN`` and ``SPREAD``. About 15 minutes on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from openpfi.assembly.clients import load_shared
from openpfi.client.scoring import shared_scorer
from openpfi.config import load_config
from openpfi.monitor.probes import load_suites
from openpfi.monitor.probes.run import ProbeResults, run_probes
from openpfi.recipes.safety_adapter import SafetySettings, build_safety_adapter

SIZES = {"harmful": 130, "benign": 237, "capability": 110, "bbq": 480, "crows": 360, "ood": 480}
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"


def per_item(res: ProbeResults) -> dict[str, list[float]]:
    """Each tested statistic's per-item values (their mean is the statistic)."""
    s = res.suites
    bbq = list(zip(res.choices["bbq"], s["bbq"].items, strict=True))
    cap = list(zip(res.choices["capability"], s["capability"].items, strict=True))
    out = {
        "refusal_prob": list(res.refusal["harmful"]), "over_refusal_prob": list(res.refusal["benign"]),
        "capability_prob": [c.probs[i.label] for c, i in cap],
        "confidence": [c.confidence for c, _ in cap] + [c.confidence for c, i in bbq if i.condition == "disambig"],
        "bbq_amb_lean": [c.probs[i.biased] - c.probs[i.other] for c, i in bbq if i.condition == "ambig"],
        "crows_stereo_prob": [float(x) for x in 1 / (1 + np.exp(-np.array(res.crows_margin)))],
        "capability_accuracy (0/1)": [float(c.correct) for c, _ in cap],
        "crows_stereo_pref (0/1)": [float(x) for x in res.crows],
    }
    for domain in ("shakespeare", "multilingual", "factual"):
        out[f"nll.{domain}"] = [x for x, i in zip(res.ood, s["ood"].items, strict=True) if i.domain == domain]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = load_config(DEMO, [])
    shared, start = load_shared(cfg)
    scorer = shared_scorer(shared, cfg.monitor.batch_tokens)
    suites = load_suites(SIZES, seed=0)
    settings = SafetySettings(model=cfg.model.name, r=cfg.lora.r, alpha=cfg.lora.alpha, targets=tuple(cfg.lora.targets),
                              probe_sizes={"harmful": 48, "benign": 24}, probe_seed=0)
    path, _, _ = build_safety_adapter(settings, shared=shared)
    values = {}
    for name, state in (("base", dict(start)), ("safety", {**dict(start), **load_file(str(path))})):
        shared.set_state(state)
        values[name] = per_item(run_probes(scorer, suites, batch=256))
    print(f"{'statistic':28s} {'n':>4s} {'sd_0':>6s} {'change':>7s} {'sd_d':>6s} {'sd_d/sd_0':>9s} {'sd_d/|change|':>13s}")
    for k, base in values["base"].items():
        x, y = np.array(base), np.array(values["safety"][k])
        d = y - x
        ratio = d.std() / abs(d.mean()) if abs(d.mean()) > 1e-9 else float("nan")
        print(f"{k:28s} {len(x):4d} {x.std():6.3f} {d.mean():+7.3f} {d.std():6.3f} {d.std() / x.std():9.2f} {ratio:13.2f}")
    if args.out:
        args.out.write_text(json.dumps(values) + "\n")


if __name__ == "__main__":
    main()
