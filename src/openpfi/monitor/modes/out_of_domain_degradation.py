"""Out-of-domain degradation: models on public out-of-domain texts (Shakespeare verse, chatterbot
Q/A in seven languages, factual statements) and capability items, against the base model.

Slots: ``out_of_domain_degradation.count.<d>`` (the client's items of domain d) and ``.nll.<d>``
(the sum over them of the mean per-token NLL / ood_max_nll, each clipped to 1), both divided by the
client's number of out-of-domain items; ``.capability_accuracy``.

Streams: ``nll.<d>`` (mean per-token NLL over the summed items of domain d), ``capability_accuracy``,
and ``nll_change.<d>``, ``capability_change`` against the base model's values on the same public
probes (exact). The global model's NLL is tested per domain, its margin a share of the round-0 value.
"""

from __future__ import annotations

from collections.abc import Mapping

from openpfi.monitor.modes.base import DeriveContext, EncodeContext, Metric, Mode, SchemaContext
from openpfi.monitor.modes.checks import check_known
from openpfi.monitor.probes.items import ProbeSuite, TextItem
from openpfi.monitor.probes.run import ProbeResults, capability
from openpfi.monitor.types import StreamName
from openpfi.monitor.vector.schema import Slot
from openpfi.monitor.vector.sums import Est, Sums

ID = "out_of_domain_degradation"
P = "out_of_domain_degradation."


def slots(ctx: SchemaContext) -> list[Slot]:
    out: list[Slot] = []
    if "ood" in ctx.suites:
        ood: list[TextItem] = list(ctx.suites["ood"].items)
        for d in sorted({i.domain for i in ood}):
            out.append(Slot(f"{P}count.{d}", 0.0, 1.0, family=P + "count"))
            out.append(Slot(f"{P}nll.{d}", 0.0, 1.0, ctx.ood_max_nll, family=P + "nll"))
    if "capability" in ctx.suites:
        out.append(Slot(P + "capability_accuracy", 0.0, 1.0))
    return out


def encode(ctx: EncodeContext) -> dict[str, float]:
    v = {P + "capability_accuracy": capability(ctx.after)}
    if "ood" in ctx.after.suites:
        texts: list[TextItem] = list(ctx.after.suites["ood"].items)
        domains = ctx.schema.keys(P + "count")
        check_known({i.domain for i in texts}, set(domains), "out-of-domain domain")
        n = max(len(texts), 1)  # no text in this sample: all slots 0
        for d in domains:
            nll = [x for x, i in zip(ctx.after.ood, texts, strict=True) if i.domain == d]
            scale = ctx.schema.slots[ctx.schema.index[f"{P}nll.{d}"]].scale
            v[f"{P}count.{d}"] = len(nll) / n
            v[f"{P}nll.{d}"] = sum(min(x, scale) / scale for x in nll) / n
    return v


def derive(c: Sums, ctx: DeriveContext) -> None:
    base = ctx.base_model
    items: list[tuple[StreamName, StreamName, float, Est | None]] = [
        (StreamName(ID, "nll", d), StreamName(ID, "nll_change", d), c.scale(f"{P}nll.{d}"),
         c.ratio({f"{P}nll.{d}": 1.0}, {f"{P}count.{d}": 1.0}, 0.0, 1.0))
        for d in c.keys(P + "nll")]
    if c.has(P + "capability_accuracy"):
        cap = c.lin({P + "capability_accuracy": 1.0}, 0.0, 0.0, 1.0)
        items.append((StreamName(ID, "capability_accuracy"), StreamName(ID, "capability_change"), 1.0, cap))
    for level, change, mx, est in items:
        if est is None:
            continue
        c.put(level, est, 0, mx, mx)
        if str(level) in base:
            c.put(change, (est[0] - base[str(level)] / mx, est[1]), -mx, mx, mx)


def model_extras(res: ProbeResults) -> dict[str, float]:
    """The mean probability of the right option over the capability items (continuous; None-safe for
    outcomes stored without option probabilities)."""
    items = res.suites["capability"].items if "capability" in res.suites else ()
    choices = res.choices.get("capability", ())
    probs = [c.probs[i.label] for c, i in zip(choices, items, strict=True) if len(c.probs) == len(i.options)]
    if not probs or len(probs) != len(choices):
        return {}
    return {str(StreamName(ID, "capability_prob")): sum(probs) / len(probs)}


def items_behind(name: StreamName, suites: Mapping[str, ProbeSuite]) -> int:
    if name.metric.startswith("capability"):
        return len(suites["capability"].items) if "capability" in suites else 0
    items = suites["ood"].items if "ood" in suites else ()
    return sum(1 for i in items if i.domain == name.group)


MODE = Mode(
    id=ID,
    title="Out-of-domain degradation",
    layer="system",
    measures="Personalized models on public out-of-domain probe sets compared with the base model.",
    nist=("MEASURE 2.5", "MEASURE 2.4", "MEASURE 3.1"),
    direction="increase",  # out-of-domain NLL (and its change against the base model) grows
    metrics={
        "nll": Metric("increase", 0.1, margin_key="nll_relative", relative=True, hi=8.0, scale_hi=True,
                      suites=("ood",), paired="per_group"),
        "nll_change": Metric("increase", lo=-8.0, hi=8.0, scale_hi=True, change_of="nll"),
        "capability_accuracy": Metric("decrease", 0.1, suites=("capability",), binary=True),
        "capability_prob": Metric("decrease", 0.1, suites=("capability",), paired="overall"),
        "capability_change": Metric("decrease", lo=-1.0, change_of="capability_accuracy"),
    },
    slots=slots,
    encode=encode,
    derive=derive,
    model_level=True,
    model_extras=model_extras,
    items_behind=items_behind,
)
