"""`openpfi bench align`: FIRM against its baselines on the bundled model.

Every run is a federated alignment job (recipes/federated_align.py) with the same rounds,
clients, local steps and pairs per step; only ``alignment.method`` and the preference p
change. FIRM and linear scalarization run at every p; FMGDA and DPO on the union do not
take a preference and run once per seed. One process holds the model and the reference
log-probabilities for all runs; each seed draws its own LoRA initialisation, client deal
and batch order. ``objectives = 3`` adds honesty (HH-RLHF honest vs deceptive answers and
sycophancy pairs) as a third objective.

Reported (JSON + table + Pareto PNG + a docs section; maths in bench/align_analysis.py,
outputs in bench/align_report.py):

- per run, the final round's public held-out figures: per-objective preference accuracy
  and implicit-reward margin, refusal / over-refusal (likelihood judge), plus per-round
  bytes up, drift (disagreement share, cosine dispersion, lambda spread) and wall time;
- per method and seed, the hypervolume of its accuracy points (reference: 0.5 on every
  objective) and of (refusal, 1 - over-refusal) (reference (0, 0));
- the checks of bench/align_analysis.py (upload ratio, steering by p, dominance, drift);
- the likelihood judge against generated answers (greedy, ``is_refusal``) on a few
  held-out prompts, for the base and one aligned model.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from openpfi.bench.align_analysis import analyse
from openpfi.bench.align_report import check_lines, docs_section, plot, table
from openpfi.bench.common import write_json
from openpfi.client.align_eval import AlignEvaluator, refusal_probabilities
from openpfi.client.dpo import ReferenceCache
from openpfi.client.federated import SharedModel
from openpfi.client.scoring import generate_chat
from openpfi.config import Config, load_config
from openpfi.data.preference import load_preferences
from openpfi.data.preference_split import eval_sets
from openpfi.errors import UserError
from openpfi.models.loader import load_model
from openpfi.models.registry import cache_dir
from openpfi.monitor.probes.refusal import detector_precision_recall, is_refusal, judge_agreement
from openpfi.recipes import federated_align
from openpfi.runfolder import RunFolder

Preference = tuple[float, ...]


@dataclass(frozen=True)
class Plan:
    seeds: tuple[int, ...]
    preferences: tuple[Preference, ...]
    rounds: int
    clients: int
    local_steps: int
    batch_size: int
    objectives: tuple[str, ...] = ("harmless", "helpful")
    max_length: int = 96
    pairs_per_client: int = 32
    eval_pairs: int = 32
    eval_prompts: int = 24
    lr: float = 5e-4
    beta: float = 3.0
    """FIRM's beta, relative to the gradients' scale (alignment.beta)."""
    dpo_beta: float = 0.1
    judge_prompts: int = 8
    """Held-out harmful and benign prompts answered by generation to validate the judge."""
    fixed_methods: tuple[str, ...] = ("fmgda", "dpo")
    p_methods: tuple[str, ...] = ("firm", "scalarized")

    def jobs(self) -> list[tuple[int, str, Preference | None]]:
        out: list[tuple[int, str, Preference | None]] = []
        for seed in self.seeds:
            out += [(seed, m, p) for p in self.preferences for m in self.p_methods]
            out += [(seed, m, None) for m in self.fixed_methods]
        return out


FULL = Plan(seeds=(0, 1), preferences=((0.1, 0.9), (0.3, 0.7), (0.5, 0.5), (0.7, 0.3), (0.9, 0.1)),
            rounds=3, clients=4, local_steps=6, batch_size=2)
QUICK = Plan(seeds=(0,), preferences=((0.2, 0.8), (0.5, 0.5), (0.8, 0.2)), rounds=2, clients=2, local_steps=3,
             batch_size=2, eval_pairs=16, eval_prompts=12, judge_prompts=4)
THREE = ("harmless", "helpful", "honest")
_P3 = ((0.6, 0.2, 0.2), (0.2, 0.6, 0.2), (0.2, 0.2, 0.6), (0.34, 0.33, 0.33))
FULL3 = replace(FULL, objectives=THREE, preferences=_P3, seeds=(0,), clients=3)
QUICK3 = replace(QUICK, objectives=THREE, preferences=_P3, clients=3)
# Seconds measured on the project's 2-core machine (SmolLM2-135M, bf16, max_length 96):
# one local step of 2 objectives x 2 pairs (4 sequences each, forward + backward), one
# public evaluation (2 x eval_pairs pairs + 2 x eval_prompts judged prompts), fixed costs.
_NEUTRAL = {2: (0.5, 0.5), 3: (0.34, 0.33, 0.33)}
SECONDS_PER_STEP = 2.2
SECONDS_PER_EVAL_ITEM = 0.02
SECONDS_SETUP = 60.0


def plan_for(quick: bool, objectives: int) -> Plan:
    """The plan of ``bench align [--quick] [--objectives 2|3]``."""
    if objectives not in (2, 3):
        raise UserError(f"--objectives {objectives}: the shipped pairs give 2 (harmless, helpful) or 3 (+ honest)")
    return {(False, 2): FULL, (True, 2): QUICK, (False, 3): FULL3, (True, 3): QUICK3}[(quick, objectives)]


def expected_seconds(plan: Plan) -> float:
    """A priori duration from the measured unit costs above."""
    m = len(plan.objectives)
    steps = plan.rounds * plan.clients * plan.local_steps
    eval_items = m * 2 * plan.eval_pairs + 2 * 4 * plan.eval_prompts
    per_run = steps * SECONDS_PER_STEP * (m / 2) * plan.batch_size / 2
    per_run += plan.rounds * eval_items * SECONDS_PER_EVAL_ITEM
    per_run += plan.rounds * plan.clients * 8 * 2 * SECONDS_PER_EVAL_ITEM  # the clients' own eval
    judge = 2 * 2 * plan.judge_prompts * 2.0  # greedy 40-token answers
    return SECONDS_SETUP + len(plan.jobs()) * per_run + judge


def _config(plan: Plan, model: str, seed: int, method: str, p: Preference | None) -> Config:
    sets = [
        f"seed={seed}", f"model.name={model}", "monitor.enabled=false",
        f"data.num_clients={plan.clients}", f"federation.clients_per_round={plan.clients}",
        f"federation.rounds={plan.rounds}", f"client.local_steps={plan.local_steps}",
        f"client.batch_size={plan.batch_size}", f"client.max_length={plan.max_length}", f"client.lr={plan.lr}",
        f"alignment.method={method}", f"alignment.pairs_per_client={plan.pairs_per_client}",
        f"alignment.eval_pairs={plan.eval_pairs}", f"alignment.eval_prompts={plan.eval_prompts}",
        f"alignment.beta={plan.beta}", f"alignment.dpo_beta={plan.dpo_beta}", "alignment.client_eval_pairs=4",
        f"alignment.objectives={list(plan.objectives)}",
        f"alignment.preference={list(p or _NEUTRAL[len(plan.objectives)])}",  # fmgda / dpo: unused, must be valid
    ]
    return load_config(None, sets)


def reseed_lora(shared: SharedModel, seed: int) -> None:
    """Fresh LoRA initialisation for a seed: A ~ kaiming-uniform(a=sqrt 5) as peft, B = 0."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in sorted(shared.initial_state.items()):
        if "lora_A" in k:
            bound = 1.0 / math.sqrt(v.shape[1])
            state[k] = (torch.rand(v.shape, generator=gen) * 2 - 1) * bound
        else:
            state[k] = torch.zeros_like(v)
    shared.initial_state = state
    shared.set_state(state)


def _keys(objectives: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    final = (*(f"{k}_{m}" for m in objectives for k in ("pref_acc", "reward_margin", "logp_acc")), "refusal_rate",
             "refusal_prob", "over_refusal_rate", "over_refusal_prob")
    per_round = ("bytes_up", "drift_cosine_dispersion", "drift_disagreement", "drift_lambda_spread",
                 "grad_cosine_mean", "train_loss", "solver_cap_hits",
                 *(f"{k}{m}{t}" for m in objectives for k, t in (("lambda_", "_mean"), ("server_lambda_", ""))))
    return final, per_round


def _summary(rows: list[dict[str, Any]], objectives: tuple[str, ...]) -> dict[str, Any]:
    final, per_round = _keys(objectives)
    last = rows[-1]
    out: dict[str, Any] = {k: last.get(k) for k in final}
    for k in per_round:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        out[f"{k}_rounds"] = vals
        out[k] = float(np.mean(vals)) if vals else None
    out["round_seconds"] = float(np.mean([r["timings"]["round_s"] for r in rows]))
    return out


def _judge_check(shared: SharedModel, evaluator: AlignEvaluator, state: dict[str, torch.Tensor],
                 n: int) -> dict[str, Any]:
    prompts = evaluator.sets.harmful_prompts[:n] + evaluator.sets.benign_prompts[:n]
    shared.set_state(state)
    shared.model.eval()
    judged = [p > 0.5 for p in refusal_probabilities(evaluator.scorer, prompts)]
    texts = generate_chat(shared.model, shared.loaded.tokenizer, prompts, 40, shared.pad_id)
    agree = judge_agreement(judged, texts)
    return {"prompts": len(prompts), "agreement": agree,
            "generated_refusals": {"harmful": sum(is_refusal(t) for t in texts[:n]) / max(n, 1),
                                   "benign": sum(is_refusal(t) for t in texts[n:]) / max(n, 1)},
            "examples": [{"prompt": p[:120], "answer": t[:160], "judge_refuses": j}
                         for p, t, j in list(zip(prompts, texts, judged, strict=True))[:: max(1, len(prompts) // 4)]]}


def _run_all(plan: Plan, model: str, shared: SharedModel, console: Console, t_start: float
             ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, torch.Tensor] | None]:
    """Every job of the plan: (run summaries, the base model's figures, FIRM's mid-p adapter of seed 0)."""
    ref = ReferenceCache(shared.model, shared.pad_id)  # the clients' (their pairs)
    server_ref = ReferenceCache(shared.model, shared.pad_id)  # the public evaluation's
    work = Path(tempfile.mkdtemp(prefix="openpfi-bench-align-"))
    runs: list[dict[str, Any]] = []
    base: dict[str, Any] | None = None
    judge_state = None
    jobs = plan.jobs()
    try:
        for i, (seed, method, p) in enumerate(jobs):
            if i == 0 or seed != jobs[i - 1][0]:
                reseed_lora(shared, seed)
            t0 = time.perf_counter()
            folder = work / f"{method}-{seed}-{'-'.join(map(str, p)) if p else 'na'}"
            run = federated_align.start(_config(plan, model, seed, method, p), folder, force=True, shared=shared,
                                        ref=ref, start_eval=base, server_ref=server_ref)
            if base is None:
                base = json.loads((folder / "manifest.json").read_text())["alignment"]["start_eval"]
            summary = {"seed": seed, "method": method, "preference": list(p) if p else None,
                       "seconds": time.perf_counter() - t0, **_summary(run.read_metrics(), plan.objectives)}
            runs.append(summary)
            accs = "/".join(f"{summary[f'pref_acc_{m}']:.3f}" for m in plan.objectives)
            console.print(f"[{i + 1}/{len(jobs)}] {method:10s} seed {seed} p {p}: acc {accs} refusal "
                          f"{summary['refusal_rate']:.2f} over {summary['over_refusal_rate']:.2f} drift "
                          f"{summary['drift_disagreement'] or float('nan'):.3f} ({summary['seconds']:.0f} s; "
                          f"elapsed {(time.perf_counter() - t_start) / 60:.1f} min)")
            if judge_state is None and method == "firm" and p == plan.preferences[len(plan.preferences) // 2]:
                judge_state = RunFolder.open(folder).load_checkpoint(plan.rounds).adapter
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(folder.parent / f"{folder.name}.clients", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert base is not None
    return runs, {k: v for k, v in base.items() if k != "refusal_judge"}, judge_state


def run_align_bench(out: Path, quick: bool = False, console: Console | None = None,
                    model: str = "smollm2-135m-instruct", docs: Path | None = None,
                    plan: Plan | None = None, objectives: int = 2) -> dict[str, Any]:
    """Run the plan (``plan_for(quick, objectives)`` unless given); write JSON, PNG and, with ``docs``,
    ``<docs>/align-<name>.md`` + ``.png``."""
    console = console or Console()
    plan = plan or plan_for(quick, objectives)
    expected = expected_seconds(plan)
    console.print(f"bench align: {len(plan.jobs())} federated runs ({len(plan.seeds)} seeds, "
                  f"{len(plan.preferences)} preference vectors, {len(plan.objectives)} objectives); expected "
                  f"duration ~{expected / 60:.0f} min on the 2-core machine")
    t_start = time.perf_counter()
    lm = load_model(model)
    shared = SharedModel(lm, 8, 16.0, ["q_proj", "v_proj"], 0.0, 0)
    runs, base, judge_state = _run_all(plan, model, shared, console, t_start)
    judge: dict[str, Any] = {}
    if judge_state is not None and plan.judge_prompts > 0:
        sets = eval_sets(load_preferences(cache_dir() / "preference"), plan.objectives, plan.eval_pairs,
                         plan.judge_prompts)
        evaluator = AlignEvaluator(shared, sets, plan.objectives, plan.dpo_beta, plan.max_length)
        reseed_lora(shared, plan.seeds[0])
        judge["base"] = _judge_check(shared, evaluator, shared.initial_state, plan.judge_prompts)
        judge["firm_p_mid_seed0"] = _judge_check(shared, evaluator, judge_state, plan.judge_prompts)
    flags = (" --quick" if quick else "") + (f" --objectives {len(plan.objectives)}" if len(plan.objectives) != 2 else "")
    result: dict[str, Any] = {
        "bench": "align", "command": f"openpfi bench align --out {out}{flags}", "model": model,
        "plan": asdict(plan), "expected_seconds": expected, "seconds": time.perf_counter() - t_start,
        "base": base, "runs": runs,
        "analysis": analyse(runs, base, plan.seeds, plan.objectives, (*plan.p_methods, *plan.fixed_methods)),
        "judge_check": judge, "detector": detector_precision_recall(),
        "machine_note": f"{torch.get_num_threads()} torch threads, compute dtype {lm.compute_dtype}",
    }
    png = out.with_suffix(".png")
    plot(result, png)
    result["pareto_png"] = str(png)
    write_json(out, result)
    console.print(table(result))
    console.print("\n".join(check_lines(result)))
    if docs is not None:
        name = f"align-{'quick' if quick else 'full'}" + (f"-{len(plan.objectives)}" if len(plan.objectives) != 2 else "")
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, docs / f"{name}.png")
        (docs / f"{name}.md").write_text(docs_section(result, f"{name}.png"))
        console.print(f"docs section: {docs / f'{name}.md'}")
    console.print(f"wrote {out} and {png} ({result['seconds'] / 60:.1f} min)")
    return result


def tiny_plan(objectives: int = 2) -> Plan:
    """A seconds-long plan for tests (tiny-random)."""
    return replace(plan_for(True, objectives), rounds=1, local_steps=1, pairs_per_client=6, eval_pairs=4,
                   eval_prompts=3, judge_prompts=2, max_length=48)
