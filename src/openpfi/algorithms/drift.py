"""Client disagreement ("drift") of a round's updates, and Pareto-front maths.

For client updates d_1..d_n (flattened state dicts):

- cosine dispersion ``1 - mean_{i<j} cos(d_i, d_j)``: 0 when all updates point the same
  way, 1 when they are orthogonal on average, up to 2 when opposed;
- disagreement share ``mean_i ||d_i - mean(d)||^2 / mean_i ||d_i||^2`` in [0, 1]: the
  fraction of the updates' energy that cancels out in the average (0 = identical
  updates, 1 = updates summing to zero);
- lambda spread: per objective the population standard deviation of the clients'
  weights, averaged over objectives.

Pareto maths for maximisation: ``pareto_front`` keeps the non-dominated points (any
dimension), ``dominates`` compares two points, ``hypervolume_2d`` is the area they dominate
above a reference point and ``hypervolume`` the volume in any dimension.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from openpfi.algorithms.state import flatten


def _flat(states: Sequence[Mapping[str, torch.Tensor]]) -> list[torch.Tensor]:
    return [flatten(s).double() for s in states]


def cosine_dispersion(states: Sequence[Mapping[str, torch.Tensor]]) -> float:
    """``1 - mean pairwise cosine``; NaN with fewer than two non-zero updates."""
    flat = [f for f in _flat(states) if float(f.norm()) > 0]
    cos = []
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            cos.append(float(flat[i] @ flat[j]) / float(flat[i].norm() * flat[j].norm()))
    return 1.0 - float(np.mean(cos)) if cos else float("nan")


def disagreement_share(states: Sequence[Mapping[str, torch.Tensor]]) -> float:
    """``mean ||d_i - mean d||^2 / mean ||d_i||^2``; NaN when every update is zero or n < 2."""
    flat = _flat(states)
    if len(flat) < 2:
        return float("nan")
    x = torch.stack(flat)  # (n, d)
    energy = float((x**2).sum(dim=1).mean())
    if energy == 0:
        return float("nan")
    return float(((x - x.mean(dim=0)) ** 2).sum(dim=1).mean()) / energy


def lambda_spread(lambdas: Sequence[Sequence[float]]) -> float:
    """Mean over objectives of the population std of the clients' weights (NaN if none)."""
    if len(lambdas) == 0:
        return float("nan")
    arr = np.asarray(lambdas, dtype=np.float64)  # (n, M)
    return float(arr.std(axis=0).mean())


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of non-dominated points (maximisation), sorted by the first coordinate."""
    pts = [tuple(float(x) for x in p) for p in points]
    keep: list[int] = []
    for i, p in enumerate(pts):
        dominated = any(dominates(q, p) for j, q in enumerate(pts) if j != i)
        if not dominated and p not in [pts[k] for k in keep]:
            keep.append(i)
    return sorted(keep, key=lambda i: pts[i])


def hypervolume_2d(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Area dominated by ``points`` and dominating ``reference`` (maximisation, 2-D).

    Sweep the front by descending x: each point adds ``(x - x_ref) * (y - y_prev)`` where
    y_prev is the best y so far (starting at y_ref). Points not above the reference add 0.
    """
    rx, ry = float(reference[0]), float(reference[1])
    pts = sorted(((float(x), float(y)) for x, y in points if x > rx and y > ry), reverse=True)
    area, best_y = 0.0, ry
    for x, y in pts:
        if y > best_y:
            area += (x - rx) * (y - best_y)
            best_y = y
    return area if math.isfinite(area) else float("nan")


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` (maximisation): no worse in every coordinate, better in one."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


HYPERVOLUME_MAX_POINTS = 16


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` above ``reference`` (maximisation, any dimension).

    Each point dominates the box ``[reference, x_i]``; the union's volume by
    inclusion-exclusion, ``sum_{S != {}} (-1)^{|S|+1} prod_k (min_{i in S} x_ik - r_k)^+``
    (the intersection of boxes is the box of the coordinate-wise minimum). Exact; at most
    ``HYPERVOLUME_MAX_POINTS`` points (2^n terms).
    """
    ref = [float(r) for r in reference]
    pts = [[float(x) for x in p] for p in points if all(float(x) > r for x, r in zip(p, ref, strict=True))]
    if len(pts) > HYPERVOLUME_MAX_POINTS:
        raise ValueError(f"hypervolume by inclusion-exclusion takes at most {HYPERVOLUME_MAX_POINTS} points")
    total = 0.0
    for k in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, k):
            corner = [min(c) for c in zip(*subset, strict=True)]
            total += (-1) ** (k + 1) * math.prod(c - r for c, r in zip(corner, ref, strict=True))
    return total
