"""Fairness collapse: the distribution of client utility (held-out loss) as a DP histogram, gaps
across public client groups, and (server side, ``detection/group_gap.py``) the global model's gap
across the groups' public texts.

Slots: ``fairness_collapse.utility_hist.<b>`` (one-hot bin of the client's held-out loss on
[0, utility_max_loss], the last bin open-ended); ``.utility_loss`` (clipped loss / max);
``.group_count.<g>`` and ``.group_loss.<g>`` (one-hot of the client's public group, times 1 and
times the clipped loss / max).

Streams: ``utility_mean`` (nats); from the DP histogram (negative noisy counts clipped to 0, linear
interpolation within bins) ``utility_worst_decile`` = the 90th percentile of client loss (the loss
above which the worst 10% of clients lie) and ``utility_spread`` = p90 - p10, with the rank
uncertainty n p (1 - p) plus the DP variance of the cumulative count (k sigma^2 over k bins) mapped
through the histogram; ``utility_group_mean.<g>`` and ``utility_group_gap`` = max - min over groups
whose noisy count is >= max(1, 2 sigma). ``global_group_gap``: the server's gap across groups.
"""

from __future__ import annotations

import math

import numpy as np

from openpfi.errors import UserError
from openpfi.monitor.modes.base import DeriveContext, EncodeContext, Metric, Mode, SchemaContext
from openpfi.monitor.types import MetricPoint, StreamName
from openpfi.monitor.vector.schema import Slot
from openpfi.monitor.vector.sums import Est, Sums, histogram_quantile

ID = "fairness_collapse"
P = "fairness_collapse."


def slots(ctx: SchemaContext) -> list[Slot]:
    mx = ctx.utility_max_loss
    out = [Slot(f"{P}utility_hist.{b}", 0.0, 1.0, family=P + "utility_hist") for b in range(ctx.utility_bins)]
    out.append(Slot(P + "utility_loss", 0.0, 1.0, mx))
    for g in ctx.groups:
        out.append(Slot(f"{P}group_count.{g}", 0.0, 1.0, family=P + "group_count"))
        out.append(Slot(f"{P}group_loss.{g}", 0.0, 1.0, mx, family=P + "group_loss"))
    return out


def encode(ctx: EncodeContext) -> dict[str, float]:
    loss, schema = ctx.utility_loss, ctx.schema
    if not (math.isfinite(loss) and loss >= 0):
        raise UserError(f"client utility loss {loss!r} must be a finite number >= 0; "
                        f"check the client's held-out evaluation")
    max_loss = schema.slots[schema.index[P + "utility_loss"]].scale
    bins = len(schema.keys(P + "utility_hist"))
    hist_bin = min(int(loss / max_loss * bins), bins - 1)
    v = {f"{P}utility_hist.{b}": float(b == hist_bin) for b in range(bins)}
    v[P + "utility_loss"] = min(loss, max_loss) / max_loss
    groups = schema.keys(P + "group_count")
    if ctx.group is not None and ctx.group not in groups:
        raise UserError(f"client group {ctx.group!r} is not one of the monitor groups {groups}; "
                        f"add it to the monitor config")
    for g in groups:
        v[f"{P}group_count.{g}"] = float(g == ctx.group)
        v[f"{P}group_loss.{g}"] = v[P + "utility_loss"] * (g == ctx.group)
    return v


def _quantiles(c: Sums, mx: float) -> None:
    bins = c.keys(P + "utility_hist")
    h = np.clip([c.get(f"{P}utility_hist.{b}") for b in bins], 0.0, None)
    total, width = float(h.sum()), mx / len(bins)
    if total <= 0:
        return
    qs = {}
    for q in (0.1, 0.9):
        v, _, _ = histogram_quantile(h, q, width)
        k = min(int(v / width), len(bins) - 1) + 1  # bins summed into the CDF at v
        sd = math.sqrt(total * q * (1 - q) + k * c.sigma**2)
        qs[q] = histogram_quantile(h, q, width, sd)
    (v10, lo10, hi10), (v90, lo90, hi90) = qs[0.1], qs[0.9]
    c.set(StreamName(ID, "utility_worst_decile"), MetricPoint(v90, lo90, hi90, c.n))
    c.set(StreamName(ID, "utility_spread"), MetricPoint(v90 - v10, max(lo90 - hi10, 0.0), hi90 - lo10, c.n))


def derive(c: Sums, ctx: DeriveContext) -> None:
    mx = c.scale(P + "utility_loss")
    c.put(StreamName(ID, "utility_mean"), c.lin({P + "utility_loss": 1.0}, 0.0, 0.0, 1.0), 0, mx, mx)
    _quantiles(c, mx)
    means: dict[str, Est] = {}
    for g in c.keys(P + "group_count"):
        cnt = c.get(f"{P}group_count.{g}")
        if cnt >= max(1.0, 2 * c.sigma):
            est = c.ratio({f"{P}group_loss.{g}": 1.0}, {f"{P}group_count.{g}": 1.0}, 0, 1, cnt)
            if est is not None:
                means[g] = est
                c.put(StreamName(ID, "utility_group_mean", g), est, 0, mx, mx, n=cnt)
    if len(means) >= 2:
        hi_g = max(means, key=lambda g: means[g][0])
        lo_g = min(means, key=lambda g: means[g][0])
        gap = (means[hi_g][0] - means[lo_g][0], means[hi_g][1] + means[lo_g][1])
        c.put(StreamName(ID, "utility_group_gap"), gap, 0, mx, mx)


MODE = Mode(
    id=ID,
    title="Fairness collapse",
    layer="model",
    measures="Distribution of client utility from a DP histogram (worst decile, spread) and gaps "
    "across groups such as languages.",
    nist=("MEASURE 2.11", "MEASURE 2.5", "MEASURE 3.1"),
    direction="increase",  # client loss: mean, worst decile, spread, group gap grow
    metrics={
        "utility_mean": Metric("increase", 0.5, hi=8.0, scale_hi=True),
        "utility_worst_decile": Metric("increase", 0.5, hi=8.0, scale_hi=True),
        "utility_spread": Metric("increase", 0.5, hi=8.0, scale_hi=True),
        "utility_group_mean": Metric("increase", 0.5, hi=8.0, scale_hi=True),
        "utility_group_gap": Metric("increase", 0.5, hi=8.0, scale_hi=True),
        "group_gap": Metric("increase", 0.1, hi=1.0),
    },
    slots=slots,
    encode=encode,
    derive=derive,
)
