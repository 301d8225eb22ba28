"""`openpfi bench align`: FIRM against its baselines on the bundled model.

Every run is a federated alignment job (recipes/federated_align.py) with the same rounds,
clients, local steps and pairs per step; only ``alignment.method`` and the preference p
change. FIRM and linear scalarization run at every p; FMGDA and DPO on the union do not
take a preference and run once per seed. One process holds the model and the reference
log-probabilities for all runs; each seed draws its own LoRA initialisation, client deal
and batch order.

Reported (JSON + table + Pareto PNG + a docs section):

- per run, the final round's public held-out figures: per-objective preference accuracy
  and implicit-reward margin, refusal / over-refusal (likelihood judge), plus per-round
  bytes up, drift (cosine dispersion, disagreement share, lambda spread) and wall time;
- per method and seed, the hypervolume of its points (preference accuracy, reference =
  the base model at (0.5, 0.5); refusal vs 1 - over-refusal, reference (0, 0));
- checks, measured rather than assumed: FIRM's upload is 1/M of FMGDA's; FIRM's drift vs
  scalarization's; smoothness of the front in p (rank correlation and largest step);
  refusal and over-refusal against the base model;
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
from rich.table import Table

from openpfi.algorithms.drift import hypervolume_2d, pareto_front
from openpfi.bench.common import write_json
from openpfi.client.align_eval import AlignEvaluator, refusal_probabilities
from openpfi.client.dpo import ReferenceCache
from openpfi.client.federated import SharedModel
from openpfi.client.scoring import generate_chat
from openpfi.config import Config, load_config
from openpfi.data.preference import load_preferences
from openpfi.data.preference_split import eval_sets
from openpfi.models.loader import load_model
from openpfi.models.registry import cache_dir
from openpfi.monitor.probes.refusal import detector_precision_recall, is_refusal, judge_agreement
from openpfi.recipes import federated_align
from openpfi.runfolder import RunFolder


@dataclass(frozen=True)
class Plan:
    seeds: tuple[int, ...]
    preferences: tuple[tuple[float, float], ...]
    rounds: int
    clients: int
    local_steps: int
    batch_size: int
    max_length: int = 96
    pairs_per_client: int = 32
    eval_pairs: int = 32
    eval_prompts: int = 24
    lr: float = 5e-4
    beta: float = 0.1
    dpo_beta: float = 0.1
    judge_prompts: int = 8
    """Held-out harmful and benign prompts answered by generation to validate the judge."""
    fixed_methods: tuple[str, ...] = ("fmgda", "dpo")
    p_methods: tuple[str, ...] = ("firm", "scalarized")

    def jobs(self) -> list[tuple[int, str, tuple[float, float] | None]]:
        out: list[tuple[int, str, tuple[float, float] | None]] = []
        for seed in self.seeds:
            out += [(seed, m, p) for p in self.preferences for m in self.p_methods]
            out += [(seed, m, None) for m in self.fixed_methods]
        return out


FULL = Plan(seeds=(0, 1), preferences=((0.1, 0.9), (0.3, 0.7), (0.5, 0.5), (0.7, 0.3), (0.9, 0.1)),
            rounds=3, clients=4, local_steps=6, batch_size=2)
QUICK = Plan(seeds=(0,), preferences=((0.2, 0.8), (0.5, 0.5), (0.8, 0.2)), rounds=2, clients=2, local_steps=3,
             batch_size=2, eval_pairs=16, eval_prompts=12, judge_prompts=4)
# Seconds measured on the project's 2-core machine (SmolLM2-135M, bf16, max_length 96):
# one local step of 2 objectives x 2 pairs (4 sequences each, forward + backward), one
# public evaluation (2 x eval_pairs pairs + 2 x eval_prompts judged prompts), fixed costs.
SECONDS_PER_STEP = 2.2
SECONDS_PER_EVAL_ITEM = 0.02
SECONDS_SETUP = 60.0


def expected_seconds(plan: Plan) -> float:
    """A priori duration from the measured unit costs above."""
    steps = plan.rounds * plan.clients * plan.local_steps
    eval_items = 2 * 2 * plan.eval_pairs + 2 * 4 * plan.eval_prompts
    per_run = steps * SECONDS_PER_STEP * plan.batch_size / 2 + plan.rounds * eval_items * SECONDS_PER_EVAL_ITEM
    per_run += plan.rounds * plan.clients * 8 * 2 * SECONDS_PER_EVAL_ITEM  # the clients' own eval
    judge = 2 * 2 * plan.judge_prompts * 2.0  # greedy 40-token answers
    return SECONDS_SETUP + len(plan.jobs()) * per_run + judge


def _config(plan: Plan, model: str, seed: int, method: str, p: tuple[float, float] | None) -> Config:
    sets = [
        f"seed={seed}", f"model.name={model}", "monitor.enabled=false",
        f"data.num_clients={plan.clients}", f"federation.clients_per_round={plan.clients}",
        f"federation.rounds={plan.rounds}", f"client.local_steps={plan.local_steps}",
        f"client.batch_size={plan.batch_size}", f"client.max_length={plan.max_length}", f"client.lr={plan.lr}",
        f"alignment.method={method}", f"alignment.pairs_per_client={plan.pairs_per_client}",
        f"alignment.eval_pairs={plan.eval_pairs}", f"alignment.eval_prompts={plan.eval_prompts}",
        f"alignment.beta={plan.beta}", f"alignment.dpo_beta={plan.dpo_beta}", "alignment.client_eval_pairs=4",
    ]
    if p is not None:
        sets.append(f"alignment.preference=[{p[0]}, {p[1]}]")
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


_FINAL_KEYS = ("pref_acc_harmless", "pref_acc_helpful", "reward_margin_harmless", "reward_margin_helpful",
               "logp_acc_harmless", "logp_acc_helpful", "refusal_rate", "refusal_prob", "over_refusal_rate",
               "over_refusal_prob")
_ROUND_KEYS = ("bytes_up", "drift_cosine_dispersion", "drift_disagreement", "drift_lambda_spread",
               "grad_cosine_mean", "lambda_harmless_mean", "server_lambda_harmless", "train_loss")


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    last = rows[-1]
    out: dict[str, Any] = {k: last.get(k) for k in _FINAL_KEYS}
    for k in _ROUND_KEYS:
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


def _spearman(x: list[float], y: list[float]) -> float:
    if len(x) < 3 or len(set(y)) < 2:
        return float("nan")
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def analyse(runs: list[dict[str, Any]], base: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """Hypervolumes, checks and the per-method table from the run summaries."""
    ref_acc = (0.5, 0.5)
    per_method: dict[str, Any] = {}
    for method in (*plan.p_methods, *plan.fixed_methods):
        hv_acc, hv_ref, rows = [], [], [r for r in runs if r["method"] == method]
        for seed in plan.seeds:
            pts = [r for r in rows if r["seed"] == seed]
            acc = [(r["pref_acc_harmless"], r["pref_acc_helpful"]) for r in pts]
            ref = [(r["refusal_rate"], 1 - r["over_refusal_rate"]) for r in pts]
            hv_acc.append(hypervolume_2d(acc, ref_acc))
            hv_ref.append(hypervolume_2d(ref, (0.0, 0.0)))
        def mean(key: str, rows: list[dict[str, Any]] = rows) -> float | None:
            vals = [r[key] for r in rows if r.get(key) is not None]
            return float(np.mean(vals)) if vals else None
        per_method[method] = {
            "runs": len(rows), "hv_acc": float(np.mean(hv_acc)), "hv_acc_sd": float(np.std(hv_acc)),
            "hv_refusal": float(np.mean(hv_ref)), "hv_refusal_sd": float(np.std(hv_ref)),
            **{k: mean(k) for k in ("pref_acc_harmless", "pref_acc_helpful", "refusal_rate", "over_refusal_rate",
                                     "bytes_up", "drift_cosine_dispersion", "drift_disagreement",
                                     "drift_lambda_spread", "round_seconds")},
        }
    for seed in plan.seeds:  # which methods' points make up the joint front (accuracy axes)
        pts = [r for r in runs if r["seed"] == seed]
        for i in pareto_front([(r["pref_acc_harmless"], r["pref_acc_helpful"]) for r in pts]):
            per_method[pts[i]["method"]]["on_joint_front"] = per_method[pts[i]["method"]].get("on_joint_front", 0) + 1
    checks: dict[str, Any] = {}
    firm, fmgda = per_method.get("firm"), per_method.get("fmgda")
    if firm and fmgda and firm["bytes_up"]:
        checks["upload_ratio_fmgda_over_firm"] = fmgda["bytes_up"] / firm["bytes_up"]
    pairs = [(f, s) for f in runs if f["method"] == "firm" for s in runs
             if s["method"] == "scalarized" and s["seed"] == f["seed"] and s["preference"] == f["preference"]]
    for key in ("drift_cosine_dispersion", "drift_disagreement"):
        diffs = [f[key] - s[key] for f, s in pairs if f.get(key) is not None and s.get(key) is not None]
        if diffs:
            checks[f"firm_minus_scalarized_{key}"] = float(np.mean(diffs))
            checks[f"firm_below_scalarized_{key}_share"] = float(np.mean([d < 0 for d in diffs]))
    for method in plan.p_methods:
        smooth: dict[str, Any] = {}
        for key in ("pref_acc_harmless", "refusal_rate", "reward_margin_harmless"):
            rhos, steps = [], []
            for seed in plan.seeds:
                curve = sorted((float(r["preference"][0]), float(r[key])) for r in runs
                               if r["method"] == method and r["seed"] == seed and r.get(key) is not None)
                rhos.append(_spearman([p for p, _ in curve], [v for _, v in curve]))
                steps.append(max((abs(b[1] - a[1]) for a, b in zip(curve, curve[1:], strict=False)), default=0.0))
            smooth[key] = {"spearman_p_vs_metric": float(np.nanmean(rhos)) if not all(map(math.isnan, rhos))
                           else None, "largest_step": float(np.max(steps))}
        checks[f"smoothness_{method}"] = smooth
    checks["refusal_vs_base"] = {
        m: {"refusal_rate": v["refusal_rate"], "over_refusal_rate": v["over_refusal_rate"],
            "refusal_gain": (v["refusal_rate"] or 0) - (base.get("refusal_rate") or 0),
            "over_refusal_rise": (v["over_refusal_rate"] or 0) - (base.get("over_refusal_rate") or 0)}
        for m, v in per_method.items()
    }
    return {"per_method": per_method, "checks": checks}


def _plot(runs: list[dict[str, Any]], base: dict[str, Any], path: Path, plan: Plan) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    colors = {"firm": "tab:red", "scalarized": "tab:blue", "fmgda": "tab:green", "dpo": "tab:purple",
              "sft": "tab:orange"}
    panels = (("pref_acc_harmless", "pref_acc_helpful", "held-out preference accuracy: harmless",
               "held-out preference accuracy: helpful"),
              ("refusal_rate", "over_refusal_rate", "refusal rate on held-out harmful prompts",
               "over-refusal rate on held-out benign prompts"))
    for ax, (kx, ky, lx, ly) in zip(axes, panels, strict=True):
        for method in (*plan.p_methods, *plan.fixed_methods):
            pts = [r for r in runs if r["method"] == method]
            for seed in plan.seeds:
                sp = sorted((r for r in pts if r["seed"] == seed), key=lambda r: (r["preference"] or [0])[0])
                xs, ys = [r[kx] for r in sp], [r[ky] for r in sp]
                style = "-o" if method in plan.p_methods else "s"
                ax.plot(xs, ys, style, color=colors.get(method, "k"), alpha=0.8 if seed == plan.seeds[0] else 0.4,
                        label=method if seed == plan.seeds[0] else None, ms=5)
                if method in plan.p_methods and seed == plan.seeds[0]:
                    for r in sp:
                        ax.annotate(f"{r['preference'][0]:.1f}", (r[kx], r[ky]), fontsize=7,
                                    textcoords="offset points", xytext=(3, 3))
        if base.get(kx) is not None:
            ax.plot([base[kx]], [base[ky]], "k*", ms=12, label="base model")
        ax.set_xlabel(lx)
        ax.set_ylabel(ly)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("Pareto front over p (labels: p_harmless)", fontsize=9)
    axes[1].set_title("safety trade-off (right = safer, down = fewer needless refusals)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(result: dict[str, Any]) -> Table:
    t = Table(title="bench align: final round, mean over seeds (and p for firm / scalarized)")
    cols = ("method", "acc harmless", "acc helpful", "refusal", "over-refusal", "HV acc", "HV refusal",
            "bytes up/round", "drift cos", "drift share", "lambda spread", "s/round")
    for c in cols:
        t.add_column(c, justify="left" if c == "method" else "right")
    base = result["base"]
    t.add_row("base model", f"{base.get('pref_acc_harmless', float('nan')):.3f}",
              f"{base.get('pref_acc_helpful', float('nan')):.3f}", f"{base.get('refusal_rate', float('nan')):.3f}",
              f"{base.get('over_refusal_rate', float('nan')):.3f}", *[""] * 7)

    def f(x: Any, fmt: str = ".3f") -> str:
        return "" if x is None else format(x, fmt)

    for m, v in result["analysis"]["per_method"].items():
        t.add_row(m, f(v["pref_acc_harmless"]), f(v["pref_acc_helpful"]), f(v["refusal_rate"]),
                  f(v["over_refusal_rate"]), f"{v['hv_acc']:.4f}±{v['hv_acc_sd']:.4f}",
                  f"{v['hv_refusal']:.3f}±{v['hv_refusal_sd']:.3f}", f(v["bytes_up"], ",.0f"),
                  f(v["drift_cosine_dispersion"]), f(v["drift_disagreement"]), f(v["drift_lambda_spread"]),
                  f(v["round_seconds"], ".1f"))
    return t


def docs_section(result: dict[str, Any], png_name: str) -> str:
    """Markdown for docs/BENCHMARKS.md."""
    plan, a, c = result["plan"], result["analysis"], result["analysis"]["checks"]
    lines = [
        "## align: FIRM vs baselines",
        "",
        f"Command: `{result['command']}` ({result['seconds'] / 60:.1f} min; expected "
        f"{result['expected_seconds'] / 60:.1f} min). Machine: {result['machine_note']}.",
        "",
        f"Setup: {plan['clients']} clients (objective mixes spread 0.1..0.9 harmless), {plan['rounds']} rounds, "
        f"{plan['local_steps']} local steps of {plan['batch_size']} pairs per objective, FedAvg; seeds "
        f"{list(plan['seeds'])}; p in {[list(p) for p in plan['preferences']]}; FIRM beta = {plan['beta']}, "
        f"DPO beta = {plan['dpo_beta']}. Held-out: {plan['eval_pairs']} pairs per objective, "
        f"{plan['eval_prompts']} harmful and {plan['eval_prompts']} benign prompts (likelihood judge).",
        "",
        "| method | acc harmless | acc helpful | refusal | over-refusal | HV acc | HV refusal | bytes up / round "
        "| drift cos | drift share | lambda spread |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    b = result["base"]
    lines.append(f"| base model | {b.get('pref_acc_harmless', 0):.3f} | {b.get('pref_acc_helpful', 0):.3f} | "
                 f"{b.get('refusal_rate', 0):.3f} | {b.get('over_refusal_rate', 0):.3f} | | | | | | |")

    def f(x: Any, fmt: str = ".3f") -> str:
        return "–" if x is None else format(x, fmt)

    for m, v in a["per_method"].items():
        lines.append(f"| {m} | {f(v['pref_acc_harmless'])} | {f(v['pref_acc_helpful'])} | {f(v['refusal_rate'])} | "
                     f"{f(v['over_refusal_rate'])} | {v['hv_acc']:.4f} ± {v['hv_acc_sd']:.4f} | "
                     f"{v['hv_refusal']:.3f} ± {v['hv_refusal_sd']:.3f} | {f(v['bytes_up'], ',.0f')} | "
                     f"{f(v['drift_cosine_dispersion'])} | {f(v['drift_disagreement'])} | "
                     f"{f(v['drift_lambda_spread'])} |")
    lines += ["", f"![Pareto front]({png_name})", "", "Checks (measured):", ""]
    if "upload_ratio_fmgda_over_firm" in c:
        lines.append(f"- upload FMGDA / FIRM = {c['upload_ratio_fmgda_over_firm']:.2f} (M = 2).")
    for key in ("drift_cosine_dispersion", "drift_disagreement"):
        if f"firm_minus_scalarized_{key}" in c:
            lines.append(f"- {key}: FIRM - scalarized = {c[f'firm_minus_scalarized_{key}']:+.4f} on average; FIRM "
                         f"lower in {100 * c[f'firm_below_scalarized_{key}_share']:.0f}% of (p, seed) pairs.")
    for m in plan["p_methods"]:
        s = c.get(f"smoothness_{m}", {})
        parts = [f"{k}: rank corr {v['spearman_p_vs_metric']}, largest step {v['largest_step']:.3f}"
                 for k, v in s.items()]
        lines.append(f"- front vs p ({m}): " + "; ".join(parts) + ".")
    j = result.get("judge_check", {})
    for name, v in j.items():
        ag = v["agreement"]
        lines.append(f"- judge vs generated answers ({name}, {v['prompts']} prompts): precision {ag['precision']}, "
                     f"recall {ag['recall']}, accuracy {ag['accuracy']}.")
    d = result["detector"]
    lines.append(f"- keyword detector on the held-out labelled set (monitor/probes/refusal.py): precision {d['precision']}, recall "
                 f"{d['recall']} (n = {d['n']}).")
    return "\n".join(lines) + "\n"


def run_align_bench(out: Path, quick: bool = False, console: Console | None = None,
                    model: str = "smollm2-135m-instruct", docs: Path | None = None,
                    plan: Plan | None = None) -> dict[str, Any]:
    console = console or Console()
    plan = plan or (QUICK if quick else FULL)
    expected = expected_seconds(plan)
    console.print(f"bench align: {len(plan.jobs())} federated runs ({len(plan.seeds)} seeds, "
                  f"{len(plan.preferences)} preference vectors); expected duration ~{expected / 60:.0f} min "
                  f"on the 2-core machine")
    t_start = time.perf_counter()
    lm = load_model(model)
    shared = SharedModel(lm, 8, 16.0, ["q_proj", "v_proj"], 0.0, 0)
    ref = ReferenceCache(shared.model, shared.pad_id)  # the clients' (their pairs)
    server_ref = ReferenceCache(shared.model, shared.pad_id)  # the public evaluation's
    work = Path(tempfile.mkdtemp(prefix="openpfi-bench-align-"))
    runs: list[dict[str, Any]] = []
    base: dict[str, Any] | None = None
    judge_state: dict[str, torch.Tensor] | None = None
    try:
        for i, (seed, method, p) in enumerate(plan.jobs()):
            if i == 0 or seed != plan.jobs()[i - 1][0]:
                reseed_lora(shared, seed)
            cfg = _config(plan, model, seed, method, p)
            t0 = time.perf_counter()
            folder = work / f"{method}-{seed}-{'-'.join(map(str, p)) if p else 'na'}"
            run = federated_align.start(cfg, folder, force=True, shared=shared, ref=ref, start_eval=base,
                                       server_ref=server_ref)
            if base is None:
                base = json.loads((folder / "manifest.json").read_text())["alignment"]["start_eval"]
            summary = {"seed": seed, "method": method, "preference": list(p) if p else None,
                       "seconds": time.perf_counter() - t0, **_summary(run.read_metrics())}
            runs.append(summary)
            console.print(f"[{i + 1}/{len(plan.jobs())}] {method:10s} seed {seed} p {p}: acc "
                          f"{summary['pref_acc_harmless']:.3f}/{summary['pref_acc_helpful']:.3f} refusal "
                          f"{summary['refusal_rate']:.2f} over {summary['over_refusal_rate']:.2f} "
                          f"({summary['seconds']:.0f} s; elapsed {(time.perf_counter() - t_start) / 60:.1f} min)")
            if judge_state is None and method == "firm" and p == plan.preferences[len(plan.preferences) // 2]:
                judge_state = RunFolder.open(folder).load_checkpoint(plan.rounds).adapter
            shutil.rmtree(folder, ignore_errors=True)
        assert base is not None
        judge: dict[str, Any] = {}
        if judge_state is not None and plan.judge_prompts > 0:
            objectives = ("harmless", "helpful")
            sets = eval_sets(load_preferences(cache_dir() / "preference"), objectives, plan.eval_pairs,
                             plan.judge_prompts)
            evaluator = AlignEvaluator(shared, sets, objectives, plan.dpo_beta, plan.max_length, ref=server_ref)
            reseed_lora(shared, plan.seeds[0])
            judge["base"] = _judge_check(shared, evaluator, shared.initial_state, plan.judge_prompts)
            judge["firm_p_mid_seed0"] = _judge_check(shared, evaluator, judge_state, plan.judge_prompts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base_clean = {k: v for k, v in base.items() if k != "refusal_judge"}
    result: dict[str, Any] = {
        "bench": "align",
        "command": f"openpfi bench align --out {out}" + (" --quick" if quick else ""),
        "model": model,
        "plan": asdict(plan),
        "expected_seconds": expected,
        "seconds": time.perf_counter() - t_start,
        "base": base_clean,
        "runs": runs,
        "analysis": analyse(runs, base_clean, plan),
        "judge_check": judge,
        "detector": detector_precision_recall(),
        "machine_note": f"{torch.get_num_threads()} torch threads, compute dtype {lm.compute_dtype}",
    }
    png = out.with_suffix(".png")
    _plot(runs, base_clean, png, plan)
    result["pareto_png"] = str(png)
    write_json(out, result)
    console.print(_table(result))
    console.print(json.dumps(result["analysis"]["checks"], indent=1, default=str))
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, docs / "align-pareto.png")
        (docs / "BENCHMARKS-align.md").write_text(docs_section(result, "align-pareto.png"))
        console.print(f"docs section: {docs / 'BENCHMARKS-align.md'}")
    console.print(f"wrote {out} and {png} ({result['seconds'] / 60:.1f} min)")
    return result


def tiny_plan() -> Plan:
    """A seconds-long plan for tests (tiny-random)."""
    return replace(QUICK, preferences=((0.2, 0.8), (0.5, 0.5), (0.8, 0.2)), rounds=1, clients=2, local_steps=1,
                   pairs_per_client=6, eval_pairs=4, eval_prompts=3, judge_prompts=2, max_length=48)
