"""The server's estimators on the noisy SUM of client reports, with their uncertainty.

Input: S = sum_c x_c + N(0, sigma^2 I) over n clients (``schema.py`` slots; sigma =
``noise_std_sum``; ``own_noise_std`` on the slots with their own budget). Nothing per client is
visible, so every figure is a function of S. Each mode's ``derive`` (``monitor/modes``) reads S
through :class:`Sums` and releases its streams with :meth:`Sums.put`.

Uncertainty: every MetricPoint carries value +- 1.96 sqrt(V_sample + V_dp), clipped to the
metric's natural range. V_dp is exact for the independent Gaussian noise, propagated by
the delta method: a linear combination a.S/n has V_dp = sigma^2 |a|^2 / n^2, a ratio
R = A / B has V_dp = sigma^2 (|a|^2 + R^2 |b|^2) / B^2. V_sample is approximated by the
Bhatia-Davis bound on the per-client value v in [lo, hi] with mean mu,
Var(v) <= (hi - mu)(mu - lo) (the binomial variance for 0/1 outcomes), divided by the
number of contributing clients; for ratios the per-client ratio is the bounded value and the
count is the summed denominator. The bound is taken at the Agresti-Coull adjusted mean
(``sampling_var``), so a share of 0 or 1 over a few clients is not read as exact.
The ECE uses the delta method with bin accuracies as binomial proportions over n_b.
Quantiles take the rank uncertainty n p (1 - p) (order statistics) plus the DP variance
of the cumulative count (k sigma^2 over k bins) and map rank +- 1.96 sd through the
histogram. Differences to the reference add the reference's variance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from openpfi.monitor.types import MetricPoint, StreamName
from openpfi.monitor.vector.schema import ReportSchema

Z95 = 1.959963984540054
Est = tuple[float, float]  # (value, variance)


def _bd(mu: float, lo: float, hi: float) -> float:
    """Bhatia-Davis bound (hi - mu)(mu - lo) on the variance of a value in [lo, hi]."""
    mu = min(max(mu, lo), hi)
    return (hi - mu) * (mu - lo)


def sampling_var(mu: float, lo: float, hi: float, count: float) -> float:
    """Variance of a mean of ``count`` values in [lo, hi] with mean ``mu``: BD(mu~) / (count + z^2)
    at mu~ = (count mu + z^2 (lo + hi) / 2) / (count + z^2), z = 1.96 (the Agresti-Coull
    adjustment: a mean of 0 or 1 over few values keeps a wide interval instead of none)."""
    k = Z95**2
    count = max(count, 0.0)
    adjusted = (count * min(max(mu, lo), hi) + k * (lo + hi) / 2) / (count + k)
    return _bd(adjusted, lo, hi) / (count + k)


class Sums:
    """The noisy sum S with the estimators of the module docstring."""

    def __init__(self, schema: ReportSchema, summed: np.ndarray, n: int, sigma: float,
                 exact: Mapping[str, float] | None = None, own_sigma: float = 0.0) -> None:
        self.schema, self.s, self.n, self.sigma, self.own_sigma = schema, summed, n, sigma, own_sigma
        self.exact = dict(exact or {})
        """Slot sums the server knows without noise (public), used instead of the noisy ones."""
        self.out: dict[str, MetricPoint] = {}
        self.stds: dict[str, float] = {}
        """Stream -> its std before the interval is clipped to the natural range (for the power analysis)."""

    def get(self, name: str) -> float:
        if name in self.exact:
            return float(self.exact[name])
        return float(self.s[self.schema.index[name]])

    def noise(self, name: str) -> float:
        """The std of the DP noise on the slot's sum: 0 for one known exactly (its coefficient
        carries no DP variance), ``own_sigma`` for one with its own budget, else ``sigma``."""
        if name in self.exact:
            return 0.0
        return self.own_sigma if self.schema.slots[self.schema.index[name]].own_budget else self.sigma

    def has(self, name: str) -> bool:
        return name in self.schema.index

    def scale(self, name: str) -> float:
        return self.schema.slots[self.schema.index[name]].scale

    def lin(self, a: Mapping[str, float], const: float, lo: float, hi: float) -> Est:
        """Mean over clients of v = sum_j a_j x_j + const, v in [lo, hi]."""
        v = sum(c * self.get(m) for m, c in a.items()) / self.n + const
        var_dp = sum((c * self.noise(m)) ** 2 for m, c in a.items()) / self.n**2
        return v, sampling_var(v, lo, hi, self.n) + var_dp

    def ratio(self, a: Mapping[str, float], d: Mapping[str, float], lo: float, hi: float,
              count: float | None = None) -> Est | None:
        """R = (a.S) / (d.S), the per-client ratio in [lo, hi]; None if d.S <= 0.

        V_dp = sigma^2 sum_j (a_j - R d_j)^2 / (d.S)^2 (delta method, exact gradient);
        V_sample = ``sampling_var(R, lo, hi, count)``, count = d.S unless given: the number of
        contributing clients when each holds at most one item of the denominator (shares of a
        client's items otherwise, so fewer than the clients: conservative).
        """
        den = sum(c * self.get(m) for m, c in d.items())
        if den <= 0:
            return None
        r = sum(c * self.get(m) for m, c in a.items()) / den
        # dict.fromkeys, not a set: a fixed summation order keeps results bit-reproducible
        grad = {m: a.get(m, 0.0) - r * d.get(m, 0.0) for m in dict.fromkeys([*a, *d])}
        var_dp = sum((g * self.noise(m)) ** 2 for m, g in grad.items()) / den**2
        return r, sampling_var(r, lo, hi, den if count is None else count) + var_dp

    def put(self, stream: StreamName, est: Est | None, lo: float, hi: float, scale: float = 1.0,
            n: float | None = None) -> None:
        """Release scale * value +- Z95 * scale * sd, clipped to [lo, hi] (natural units).

        The value is clipped first and the interval is centred on the clipped value, so a noisy
        value beyond a bound (DP noise) keeps the full half-width on the inner side instead of
        collapsing to a zero-width interval at the bound (which a detector would read as exact).
        """
        if est is None:
            return
        self.stds[str(stream)] = math.sqrt(max(est[1], 0.0)) * scale
        v, half = est[0] * scale, Z95 * math.sqrt(max(est[1], 0.0)) * scale
        vc = min(max(v, lo), hi)
        self.out[str(stream)] = MetricPoint(vc, max(vc - half, lo), min(vc + half, hi),
                                       int(round(self.n if n is None else n)))

    def set(self, stream: StreamName, point: MetricPoint) -> None:
        """Release a point computed outside :meth:`put` (e.g. a histogram quantile)."""
        self.out[str(stream)] = point

    def keys(self, prefix: str) -> list[str]:
        return self.schema.keys(prefix)


def each_and_pooled(groups: list[str]) -> list[tuple[list[str], str | None]]:
    """([g], g) for every group, then (all groups, None) for the pooled stream."""
    return [([g], g) for g in groups] + ([(groups, None)] if groups else [])




def histogram_quantile(counts: np.ndarray, q: float, width: float, rank_sd: float = 0.0
                       ) -> tuple[float, float, float]:
    """(value, lo, hi) of the q-quantile of a histogram with bins of ``width`` from 0.

    Negative counts are clipped to 0; within a bin mass is uniform (linear interpolation);
    lo/hi map the rank q N -/+ 1.96 ``rank_sd`` through the same inverse CDF.
    """
    h = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
    cum = np.cumsum(h)

    def inv(t: float) -> float:
        t = min(max(t, 0.0), float(cum[-1]))
        b = int(np.argmax((cum >= t) & (h > 0)))
        prev = float(cum[b - 1]) if b else 0.0
        return float((b + (t - prev) / h[b]) * width)

    t = q * float(cum[-1])
    return inv(t), inv(t - Z95 * rank_sd), inv(t + Z95 * rank_sd)

