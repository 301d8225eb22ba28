"""Server side of the monitor: per-mode streams from the noisy SUM of client reports.

Each mode derives its own streams (``monitor/modes``, ``derive``) through the estimators of
``sums.py``; streams are named ``<mode>.<metric>[.<group>]`` (``types.StreamName``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from openpfi.errors import UserError
from openpfi.monitor.modes import MODE_LIST, DeriveContext, Mode
from openpfi.monitor.types import MetricPoint
from openpfi.monitor.vector.personal import personal_points, personal_stds, section
from openpfi.monitor.vector.schema import ReportSchema
from openpfi.monitor.vector.sums import Sums


def derive_metrics(schema: ReportSchema, summed: np.ndarray, n_clients: int,
                   noise_std_sum: float, reference: Mapping[str, MetricPoint] | None = None,
                   base_model: Mapping[str, float] | None = None, *,
                   minimum_clients: int = 2,
                   exact: Mapping[str, float] | None = None,
                   own_noise_std: float = 0.0, stds: dict[str, float] | None = None,
                   modes: tuple[Mode, ...] = MODE_LIST) -> dict[str, MetricPoint]:
    """Per-mode MetricPoints from the noisy sum of ``n_clients`` reports.

    Returns {} (nothing released) when ``n_clients < minimum_clients``; the caller logs it.
    ``reference``: the round-0 points (alignment changes); ``base_model``: the base model's values
    on the public probes (out-of-domain changes). ``exact``: slot sums the server knows without
    noise and uses instead of the noisy ones, e.g. ``adaptation_misalignment.measured`` = n when
    every client probes before training (a public setting), so that ratio has an exact denominator.
    ``stds``: filled with each stream's std before its interval is clipped to the metric's range;
    ``modes``: the modes derived (the personal section holds the model-level ones only).
    """
    if n_clients < max(minimum_clients, 1):
        return {}
    if not (math.isfinite(noise_std_sum) and noise_std_sum >= 0):
        raise UserError(f"monitor noise_std_sum {noise_std_sum!r} must be a finite number >= 0")
    unknown = sorted(set(exact or {}) - set(schema.index))
    if unknown:
        raise UserError(f"exact slot sums given for slots the schema does not have: {unknown}")
    c = Sums(schema, schema.check_length(summed, "summed monitor reports"), n_clients,
             float(noise_std_sum), exact, float(own_noise_std))
    ctx = DeriveContext(dict(reference or {}), dict(base_model or {}))
    for mode in modes:
        mode.derive(c, ctx)
    if stds is not None:
        stds.update(c.stds)
    part = section(schema)
    if part is None:
        return c.out
    sub, idx = part  # the clients' personal models: the same estimators on their slots
    sub_stds: dict[str, float] = {}
    points = derive_metrics(sub, c.s[idx], n_clients, noise_std_sum, reference, base_model,
                            minimum_clients=minimum_clients, stds=sub_stds,
                            modes=tuple(m for m in MODE_LIST if m.model_level))
    if stds is not None:
        stds.update(personal_stds(sub_stds))
    return {**c.out, **personal_points(points)}
