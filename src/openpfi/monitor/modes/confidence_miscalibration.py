"""Confidence miscalibration: expected calibration error on multiple-choice probes with known answers
(BBQ disambiguated contexts and capability items; Guo et al. 2017).

Slots: ``confidence_miscalibration.bin_count.<b>``, ``.bin_confidence.<b>``, ``.bin_correct.<b>``: per
confidence bin [b/B, (b+1)/B), the item count, confidence sum and correct count, divided by the
client's number of multiple-choice items.

Streams: ``ece`` = sum_b |acc_b - conf_b| n_b / N = sum_b |C_b - F_b| / N from the summed bin counts
n_b, correct sums C_b and confidence sums F_b (delta method for the DP part, bin accuracies as
binomial proportions for the sampling part); ``accuracy``, ``confidence``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from openpfi.monitor.modes.base import DeriveContext, EncodeContext, Metric, Mode, SchemaContext
from openpfi.monitor.probes.items import ProbeSuite
from openpfi.monitor.types import StreamName
from openpfi.monitor.vector.schema import Slot
from openpfi.monitor.vector.sums import Sums

ID = "confidence_miscalibration"
P = "confidence_miscalibration."
KINDS = ("bin_count", "bin_confidence", "bin_correct")


def _has_choices(suites: Mapping[str, ProbeSuite]) -> bool:
    return "capability" in suites or any(i.condition == "disambig" for i in (suites["bbq"].items if "bbq" in suites else ()))


def slots(ctx: SchemaContext) -> list[Slot]:
    if not _has_choices(ctx.suites):
        return []
    return [Slot(f"{P}{k}.{b}", 0.0, 1.0, family=P + k) for k in KINDS for b in range(ctx.bins)]


def encode(ctx: EncodeContext) -> dict[str, float]:
    after = ctx.after
    mc = list(after.choices.get("capability", ()))
    if "bbq" in after.suites:
        mc += [ch for ch, i in zip(after.choices["bbq"], after.suites["bbq"].items, strict=True) if i.condition == "disambig"]
    bins = len(ctx.schema.keys(P + "bin_count"))
    if not bins:
        return {}
    count, conf, corr = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    for choice in mc:
        b = min(int(choice.confidence * bins), bins - 1)
        count[b] += 1
        conf[b] += choice.confidence
        corr[b] += choice.correct
    total = max(len(mc), 1)  # no multiple-choice item in this sample: all bins 0
    v: dict[str, float] = {}
    for b in range(bins):
        v[f"{P}bin_count.{b}"] = count[b] / total
        v[f"{P}bin_confidence.{b}"] = conf[b] / total
        v[f"{P}bin_correct.{b}"] = corr[b] / total
    return v


def derive(c: Sums, ctx: DeriveContext) -> None:
    bins = c.keys(P + "bin_count")
    if not bins:
        return
    nb = np.array([c.get(f"{P}bin_count.{b}") for b in bins])
    cb = np.array([c.get(f"{P}bin_correct.{b}") for b in bins])
    fb = np.array([c.get(f"{P}bin_confidence.{b}") for b in bins])
    total = float(nb.sum())
    if total <= 0:
        return
    ece = float(np.abs(cb - fb).sum() / total)
    # delta method: dECE/dC_b = sign/N, dECE/dF_b = -sign/N, dECE/dn_b = -ECE/N
    var_dp = c.sigma**2 * len(bins) * (2.0 + ece**2) / total**2
    pos = nb > 0
    acc = np.clip(cb[pos] / nb[pos], 0.0, 1.0)
    var_s = float((nb[pos] * acc * (1 - acc)).sum()) / total**2
    c.put(StreamName(ID, "ece"), (ece, var_s + var_dp), 0, 1)
    counts = {f"{P}bin_count.{b}": 1.0 for b in bins}
    c.put(StreamName(ID, "accuracy"), c.ratio({f"{P}bin_correct.{b}": 1.0 for b in bins}, counts, 0, 1), 0, 1)
    c.put(StreamName(ID, "confidence"), c.ratio({f"{P}bin_confidence.{b}": 1.0 for b in bins}, counts, 0, 1), 0, 1)


def items_behind(name: StreamName, suites: Mapping[str, ProbeSuite]) -> int:
    cap = len(suites["capability"].items) if "capability" in suites else 0
    return cap + sum(1 for i in (suites["bbq"].items if "bbq" in suites else ()) if i.condition == "disambig")


MODE = Mode(
    id=ID,
    title="Confidence miscalibration",
    layer="data",
    measures="Expected calibration error from per-bin confidence and correctness sums on multiple-choice "
    "probes with known answers.",
    nist=("MEASURE 2.5", "MEASURE 2.4", "MEASURE 3.1"),
    direction="increase",  # ECE grows
    metrics={
        "ece": Metric("increase", 0.05, suites=("capability", "bbq"), paired="overall"),
        "accuracy": Metric("decrease", 0.1, suites=("capability", "bbq"), binary=True),
        "confidence": Metric("both", 0.1, suites=("capability", "bbq"), paired="overall"),
    },
    slots=slots,
    encode=encode,
    derive=derive,
    model_level=True,
    items_behind=items_behind,
)
