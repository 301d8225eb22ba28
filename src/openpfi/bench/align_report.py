"""`openpfi bench align`'s outputs: the Pareto plot, the console table and the docs section."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from rich.table import Table

COLORS = {"firm": "tab:red", "scalarized": "tab:blue", "fmgda": "tab:green", "dpo": "tab:purple", "sft": "tab:orange"}


def _label(p: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in p)


def _front_panel(ax: Any, runs: list[dict[str, Any]], base: dict[str, Any], result: dict[str, Any],
                 kx: str, ky: str) -> None:
    plan = result["plan"]
    for method in (*plan["p_methods"], *plan["fixed_methods"]):
        for seed in plan["seeds"]:
            sp = sorted((r for r in runs if r["method"] == method and r["seed"] == seed),
                        key=lambda r: r["preference"] or [0.0])
            first = seed == plan["seeds"][0]
            line = "-o" if len(plan["objectives"]) == 2 else "o"  # p is one number only for M = 2
            ax.plot([r[kx] for r in sp], [r[ky] for r in sp], line if method in plan["p_methods"] else "s",
                    color=COLORS.get(method, "k"), alpha=0.8 if first else 0.35, label=method if first else None,
                    ms=5)
            if method in plan["p_methods"] and first:
                for r in sp:
                    ax.annotate(_label(r["preference"]), (r[kx], r[ky]), fontsize=6, textcoords="offset points",
                                xytext=(3, 3))
    if base.get(kx) is not None and base.get(ky) is not None:
        ax.plot([base[kx]], [base[ky]], "k*", ms=12, label="base model")
    ax.set_xlabel(kx.replace("pref_acc_", "held-out preference accuracy: ").replace("_", " "))
    ax.set_ylabel(ky.replace("pref_acc_", "held-out preference accuracy: ").replace("_", " "))
    ax.grid(alpha=0.3)


def plot(result: dict[str, Any], path: Path) -> None:
    """Fronts (pairs of objectives' accuracies, labelled with p; refusal vs over-refusal for M = 2)
    and the drift of each method per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, base, objectives = result["runs"], result["base"], result["plan"]["objectives"]
    panels = [(f"pref_acc_{a}", f"pref_acc_{b}") for a, b in itertools.combinations(objectives, 2)]
    if len(objectives) == 2:
        panels.append(("refusal_rate", "over_refusal_rate"))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.6 * (len(panels) + 1), 4.4))
    for ax, (kx, ky) in zip(axes, panels, strict=False):
        _front_panel(ax, runs, base, result, kx, ky)
    axes[0].legend(fontsize=7)
    axes[0].set_title("front over p (labels: p)", fontsize=9)
    drift = axes[-1]
    for method, v in result["analysis"]["per_method"].items():
        vals = v.get("drift_disagreement_per_round") or []
        drift.plot(range(1, len(vals) + 1), vals, "-o", color=COLORS.get(method, "k"), label=method, ms=4)
    drift.set_xlabel("round")
    drift.set_xticks(range(1, result["plan"]["rounds"] + 1))
    drift.set_ylabel("drift: mean ||d_i - mean d||^2 / mean ||d_i||^2")
    drift.set_title("client drift per round (mean over p and seeds)", fontsize=9)
    drift.grid(alpha=0.3)
    drift.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(x: Any, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def _rows(result: dict[str, Any]) -> list[list[str]]:
    objectives = result["plan"]["objectives"]
    b = result["base"]
    rows = [["base model", *(_fmt(b.get(f"pref_acc_{m}")) for m in objectives), _fmt(b.get("refusal_rate")),
             _fmt(b.get("over_refusal_rate")), "", "", "", "", "", ""]]
    for m, v in result["analysis"]["per_method"].items():
        rows.append([m, *(_fmt(v[f"pref_acc_{o}"]) for o in objectives), _fmt(v["refusal_rate"]),
                     _fmt(v["over_refusal_rate"]), f"{v['hv_acc']:.4f} ± {v['hv_acc_sd']:.4f}",
                     f"{v['hv_refusal']:.3f} ± {v['hv_refusal_sd']:.3f}", _fmt(v["bytes_up"], ",.0f"),
                     _fmt(v["drift_disagreement"]), _fmt(v["drift_cosine_dispersion"]), _fmt(v["drift_lambda_spread"])])
    return rows


def _columns(result: dict[str, Any]) -> list[str]:
    return ["method", *(f"acc {m}" for m in result["plan"]["objectives"]), "refusal", "over-refusal", "HV acc",
            "HV refusal", "bytes up / round", "drift", "drift cos", "lambda spread"]


def table(result: dict[str, Any]) -> Table:
    t = Table(title="bench align: final round, mean over seeds (and p for firm / scalarized)")
    for c in _columns(result):
        t.add_column(c, justify="left" if c == "method" else "right")
    for row in _rows(result):
        t.add_row(*row)
    return t


def check_lines(result: dict[str, Any]) -> list[str]:
    """The checks as sentences (docs and console)."""
    c, objectives = result["analysis"]["checks"], result["plan"]["objectives"]
    lines = []
    if "upload_ratio_fmgda_over_firm" in c:
        lines.append(f"- upload FMGDA / FIRM = {c['upload_ratio_fmgda_over_firm']:.2f} (M = {len(objectives)}).")
    for key, d in c["drift"].items():
        if d["pairs"]:
            by_round = ", ".join(f"{n} of {d['pairs']}" for n in d["firm_lower_by_round"])
            lines.append(f"- {key}: FIRM below scalarization in {d['firm_lower']} of {d['pairs']} (p, seed) pairs "
                         f"(mean over rounds; FIRM - scalarization = {d['mean_difference']:+.4f}); by round: "
                         f"{by_round}.")
    for key, d in c.get("drift_matched_weights", {}).items():
        if d["pairs"]:
            lines.append(f"- {key} at the same trade-off (scalarization interpolated at FIRM's mean lambda): FIRM "
                         f"below in {d['firm_lower']} of {d['pairs']} runs (mean difference {d['mean_difference']:+.4f}).")
    for method, seeds in c["steering"].items():
        for seed, per in seeds.items():
            parts = [f"{m} {'monotone' if v['monotone'] else 'NOT monotone'} (rank corr {_fmt(v['spearman'], '.2f')}), "
                     f"span {v['span']:.3f}" + (f" = {v['span_vs_reference']:.2f} of scalarization's"
                                               if method == "firm" and v["span_vs_reference"] is not None else "")
                     for m, v in per.items()]
            lines.append(f"- steering, {method}, seed {seed}: " + "; ".join(parts) + ".")
    for seed, where in c["firm_dominated_at"].items():
        lines.append(f"- seed {seed}: FIRM's point dominated by a scalarization point at "
                     + (", ".join(f"p = {_label(p)}" for p in where) if where else "no p") + ".")
    return lines


def docs_section(result: dict[str, Any], png_name: str) -> str:
    """Markdown of one run: command, setup, the table, the plot and the checks."""
    plan = result["plan"]
    cols = _columns(result)
    lines = [
        f"Command: `{result['command']}` ({result['seconds'] / 60:.1f} min; expected "
        f"{result['expected_seconds'] / 60:.1f} min). Machine: {result['machine_note']}.",
        "",
        f"Setup: objectives {list(plan['objectives'])}; {plan['clients']} clients with different objective mixes, "
        f"{plan['rounds']} rounds, {plan['local_steps']} local steps of {plan['batch_size']} pairs per objective, "
        f"FedAvg; seeds {list(plan['seeds'])}; p in {[list(p) for p in plan['preferences']]}; FIRM beta = "
        f"{plan['beta']} (relative to tr(G)/M), DPO beta = {plan['dpo_beta']}. Held-out: {plan['eval_pairs']} pairs "
        f"per objective, {plan['eval_prompts']} harmful and {plan['eval_prompts']} benign prompts (likelihood judge).",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(row) + " |" for row in _rows(result)),
        "",
        f"![Pareto front]({png_name})",
        "",
        "Checks (measured):",
        "",
        *check_lines(result),
    ]
    j = result.get("judge_check", {})
    for name, v in j.items():
        ag = v["agreement"]
        lines.append(f"- judge vs generated answers ({name}, {v['prompts']} prompts): precision {ag['precision']}, "
                     f"recall {ag['recall']}, accuracy {ag['accuracy']}.")
    d = result["detector"]
    lines.append(f"- keyword detector on the held-out labelled set (monitor/probes/refusal.py): precision "
                 f"{d['precision']}, recall {d['recall']} (n = {d['n']}).")
    return "\n".join(lines) + "\n"
