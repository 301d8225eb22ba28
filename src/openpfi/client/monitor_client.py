"""The client side of the silent-failure monitor: probe, encode, clip, noise — one vector out.

In a round, a sampled client that has trained:

1. draws its probe sample: ``client_items[s]`` items of every public suite s, seeded by
   (seed, round, client), so different clients score different items;
2. scores the sample with its trained (personalized) model ("after") and, on the
   capability, harmful and out-of-domain items only (``BEFORE_SUITES``), with the model it
   started the round from ("before": adaptation misalignment needs nothing else);
3. measures its utility: held-out loss of the trained model on ``utility_examples``
   of its held-out examples (a seeded sample per round), scored in the same packed pass
   as the probes (``client.scoring.ModelScorer.score``);
4. encodes the bounded report (``monitor.vector.encode.encode_report``) against the
   schema of the FULL suites, clips it to L2 norm C and adds its share
   N(0, sigma^2 / n I) of the round's noise (``monitor.privacy.privatize_report``; sigma = z C, n the
   clients the round was sampled for), drawn from a ``numpy`` generator seeded by
   (client secret, round, client) (``noise_rng``).

Only that vector leaves the client (``ClientUpdate.monitor``); the raw probe outcomes,
the utility and the sample are dropped when ``run`` returns. This object holds only
public things (suites, schema, settings, a scorer over the shared model), never a
client's data between calls.

Trade-off (cost vs precision). Scoring every suite on every client costs ~21k forward
tokens per probe run at the default suite sizes (~8.6k with shared prompts packed,
client/scoring.py), several times one client's training round of the demo (10 steps x 4
x ~70 tokens, forward + backward); the issue's budget is 10% of the round. So each
client scores a sample of 10 items (``monitor.client_items``: ~540 tokens), re-scores
its 4 capability and harmful items on the received model (~220 tokens) and its utility
on 4 held-out examples (~280 tokens); the server pools all clients' samples: counts in
the report are shares of the client's sampled items and the server estimates every rate
as a ratio of sums (schema.py, derive.py). A round with n clients thus rests on
n x client_items[s] items of suite s (8 BBQ questions with 8 clients at the defaults):
pooled streams are meaningful every round, per-category streams only over several rounds
or with more clients; the sampling part of every interval reflects that. Raise
``monitor.client_items`` for precision at a proportional cost.

Privacy: the noise must be unknown to the server, or it could regenerate and subtract it
and the DP guarantee would be void. So the noise generator is NOT seeded from the run seed,
the round and the client id (all known to the server) but from a 32-byte secret of the
client (``secrets.token_bytes``, ``client.store.ClientStore.secret``), kept in the
client store (in-process: ``<run>.clients/<id>/monitor-secret.key``, next to the run folder; Flower: the
node's state dir), never in the checkpoints, metrics, audit or anything sent. A resumed
run reads the secret back, so its noise (and everything downstream) is bit-identical;
two fresh runs with the same seed draw different noise. The probe and utility samples
stay seeded by (seed, round, client): they are public choices and carry no protection.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from openpfi.client.federated import derive_seed
from openpfi.client.messages import MonitorReport
from openpfi.client.scoring import ModelScorer
from openpfi.data.tokenize import Encoded
from openpfi.monitor.privacy.mechanism import privatize_report
from openpfi.monitor.probes import ProbeSuite, subset_suite
from openpfi.monitor.probes.run import probe_items, run_probes
from openpfi.monitor.types import ScoreItem
from openpfi.monitor.vector.encode import encode_report
from openpfi.monitor.vector.personal import is_personal
from openpfi.monitor.vector.schema import ReportSchema

BEFORE_SUITES = ("capability", "harmful", "ood")
"""The only suites the before-training probe needs (adaptation_misalignment slots)."""


@dataclass(frozen=True)
class ClientMonitorSettings:
    """Public settings every client receives with the round configuration."""

    client_items: Mapping[str, int]
    probe_before: bool
    utility_examples: int
    thresholds: Mapping[str, float]
    l2_clip: float
    noise_std_sum: float
    """sigma = z * C (without own-budget slots): the std of the noise on the SUM of the round's reports."""
    n_expected: int
    """Reports the noise shares are sized for (clients sampled per round)."""
    eval_batch_size: int = 8
    groups: tuple[str, ...] = ()
    own_noise_std_sum: float = 0.0
    """The same for the report's own-budget slots (``ReportSchema.own_budget``)."""


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))


def noise_rng(secret: bytes, round_num: int, client_id: str) -> np.random.Generator:
    """The generator of a client's monitor noise in a round: SHA-256 of (secret, round, client)
    as a 256-bit seed. Without the secret (>= 16 bytes) it cannot be regenerated."""
    if len(secret) < 16:
        raise ValueError(f"the monitor noise needs a client secret of at least 16 bytes, got {len(secret)}")
    h = hashlib.sha256(b"openpfi-monitor-noise\0" + secret + f"\0{int(round_num)}\0{client_id}".encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(h, "little")))


class ClientMonitor:
    """Runs the monitor for any client on the shared model (see the module docstring)."""

    def __init__(
        self,
        suites: Mapping[str, ProbeSuite],
        schema: ReportSchema,
        settings: ClientMonitorSettings,
        scorer: ModelScorer,
        batch: int = 256,
    ):
        self.suites = dict(suites)
        self.schema = schema
        self.settings = settings
        self.scorer = scorer
        self.batch = batch
        self.personal = any(is_personal(x.name) for x in schema.slots)
        """The schema has the personal-model section: clients probe their personal models too."""

    def sample(self, seed: int, round_num: int, client_id: str) -> dict[str, ProbeSuite]:
        """This client's probe sample for the round: ``client_items[s]`` items of each suite."""
        rng = _rng("monitor-sample", seed, round_num, client_id)
        out = {}
        for name in sorted(self.suites):
            suite = self.suites[name]
            k = min(int(self.settings.client_items.get(name, 0)), len(suite.items))
            idx = sorted(rng.choice(len(suite.items), size=k, replace=False).tolist())
            out[name] = subset_suite(suite, idx)
        return out

    def run(
        self,
        shared: Any,
        seed: int,
        round_num: int,
        client_id: str,
        start: Mapping[str, Any],
        trained: Mapping[str, Any],
        heldout: Sequence[Encoded],
        group: str | None,
        *,
        secret: bytes,
        personal: Mapping[str, Any] | None = None,
    ) -> tuple[MonitorReport | None, float]:
        """(the clipped, noised report or None, seconds spent). Leaves ``trained`` loaded.

        ``start``: the adapter state the client started the round from (the received global
        model with its personal part); ``trained``: its model after local training;
        ``secret``: the client's secret seeding the noise (``FederatedClient.secret``), used
        here and not kept; ``personal``: the client's personal model (the one it uses), probed on
        the same sample when the schema has the personal section.
        """
        t0 = time.perf_counter()
        s = self.settings
        sample = self.sample(seed, round_num, client_id)
        before = None
        if s.probe_before:
            shared.set_state(dict(start))
            before = run_probes(self.scorer, {k: v for k, v in sample.items() if k in BEFORE_SUITES}, batch=self.batch)
        shared.set_state(dict(trained))
        items = probe_items(sample)
        examples = self._utility_examples(seed, round_num, client_id, heldout)
        scores, held = self.scorer.score(items, examples)  # one packed pass for probes and utility
        after = run_probes(_Precomputed(dict(zip(items, scores, strict=True))), sample, batch=max(len(items), 1))
        n_tokens = sum(n for _, n in held)
        if n_tokens == 0:
            return None, time.perf_counter() - t0  # no held-out tokens: nothing to report
        utility = -sum(lp for lp, _ in held) / n_tokens  # mean NLL per target token, as evaluate_loss
        own = None
        if personal is not None and self.personal:
            shared.set_state(dict(personal))
            own = run_probes(self.scorer, sample, batch=self.batch)
            shared.set_state(dict(trained))
        vec = encode_report(
            self.schema, after, before, utility, group if group in s.groups else None, s.thresholds, own
        )
        report = privatize_report(vec, self.schema.lo, self.schema.hi, l2_max=s.l2_clip,
                                  noise_std=self.schema.slot_noise(s.noise_std_sum, s.own_noise_std_sum),
                                  n_clients=s.n_expected, generator=noise_rng(secret, round_num, client_id),
                                  mask=self.schema.clip_mask)
        return MonitorReport(report), time.perf_counter() - t0

    def _utility_examples(self, seed: int, round_num: int, client_id: str, heldout: Sequence[Encoded]) -> list[Encoded]:
        k = min(self.settings.utility_examples, len(heldout))
        idx = _rng("monitor-utility", seed, round_num, client_id).choice(len(heldout), size=k, replace=False)
        return [heldout[i] for i in sorted(idx.tolist())]


class _Precomputed:
    """A Scorer answering from scores computed ahead (the packed pass of ``ClientMonitor.run``)."""

    def __init__(self, table: dict[ScoreItem, tuple[float, int]]):
        self.table = table

    def logprobs(self, items: Sequence[ScoreItem]) -> list[tuple[float, int]]:
        return [self.table[it] for it in items]
