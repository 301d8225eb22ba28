"""Server-side evaluation of the global or base model on the public probe suites.

The probes are public, so the server may run them on models it holds (the base model and
the aggregated global model; never a client's personalized model). To make the figures
comparable with ``derive_metrics``, the server's model is treated as one noiseless client:
its results are encoded with the same ``encode_report`` and derived with the same
``derive_metrics`` (n = 1, sigma = 0). Streams that describe clients rather than a model
(``fairness_collapse``: client utility; ``adaptation_misalignment``: within-round change)
are left out.
"""

from __future__ import annotations

from collections.abc import Mapping

from openpfi.monitor.client_probe import encode_report, run_probes
from openpfi.monitor.derive import derive_metrics
from openpfi.monitor.probes import ProbeSuite
from openpfi.monitor.schema import build_schema
from openpfi.monitor.types import Scorer, stream_mode

#: Modes whose streams describe a model (and so can be evaluated on the server).
MODEL_MODES = ("amplified_bias", "confidence_miscalibration", "out_of_domain_degradation",
               "alignment_erosion")


def evaluate_public(scorer: Scorer, suites: Mapping[str, ProbeSuite], *, batch: int = 32,
                    ood_max_nll: float = 8.0) -> dict[str, float]:
    """Stream name -> value of ``scorer``'s model on ``suites`` (e.g. the ``base_model``
    argument of ``derive_metrics``). ``ood_max_nll`` must match the clients' schema."""
    schema = build_schema(suites, groups=(), ood_max_nll=ood_max_nll)
    vec = encode_report(schema, run_probes(scorer, suites, batch=batch), None, 0.0, None)
    points = derive_metrics(schema, vec, 1, 0.0, minimum_clients=1)
    return {k: p.value for k, p in points.items() if stream_mode(k) in MODEL_MODES}
