"""The figure of `openpfi bench personalize`: each method's mean and worst-decile own loss per data set."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(6.5 * len(summary), 4.8), squeeze=False)
    for ax, (dataset, d) in zip(axes[0], summary.items(), strict=False):
        names = list(d["methods"])
        v = d["methods"]
        x = range(len(names))
        means = [v[n]["mean"]["mean"] for n in names]
        colors = ["tab:orange" if v[n]["personalized"] else "tab:blue" for n in names]
        ax.errorbar(x, means, yerr=[v[n]["mean"]["sd"] for n in names], fmt="none", ecolor="grey", capsize=3)
        ax.scatter(x, means, c=colors, s=50, zorder=3, label="mean (bar: sd over seeds)")
        ax.scatter(x, [v[n]["worst_decile"]["mean"] for n in names], color="black", marker="v", zorder=3,
                   label="worst decile")  # fmt: skip
        if d["base_model_mean"] is not None:
            ax.axhline(d["base_model_mean"], color="grey", linestyle="--", linewidth=1, label="base model")
        lo = min(means + [d["base_model_mean"] or min(means)])
        hi = max([v[n]["worst_decile"]["mean"] for n in names] + [d["base_model_mean"] or 0.0])
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-3), hi + 0.1 * (hi - lo + 1e-3))
        ax.set_xticks(list(x), [v[n]["label"] for n in names], rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("held-out loss of the client's own model")
        ax.set_title(f"{dataset} (orange: personalized)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
