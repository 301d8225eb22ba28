"""The server side of the silent-failure monitor: one round hook over privacy-protected sums.

What the server gets from clients is the SUM of their clipped, noised report vectors
(``RoundResult.monitor``, plain in-process, SecAgg+ on Flower) and the names of clients
whose report was rejected before summing (``RoundResult.rejected``) (wrong length, non-finite, or a value further
than ``reject_k`` noise-share std outside its bounds: ``privacy.validate_report``). Per
round it then

1. releases the sum only when at least ``min_clients`` reports are in it
   (``privacy.release_allowed``) and charges the privacy ledger (``privacy.json``);
2. derives the per-mode metrics with intervals that include the DP noise
   (``vector.derive.derive_metrics``), against the base model (out-of-domain change) and the
   round-0 model (alignment erosion);
3. scores the global model on the round's block of the public probe sample and tests its change
   since round 0 item-paired beyond a materiality margin, with evidence accumulated over the rounds
   (``monitor_global.py``; streams ``<mode>.global_<metric>``, no DP noise);
4. feeds the client streams to the change detectors (CUSUM or Page-Hinkley, thresholds set
   by simulation for the target false-alarm rate over all streams);
5. writes every released aggregate, rejected report and alarm to ``audit.jsonl`` and the
   six modes' figures into the metrics row (keys ``amplified_bias``, ...);
6. saves its state (detector recursions, ledger, history) as
   ``monitor/state-round-N.json`` so ``openpfi resume`` continues it exactly.

It holds no reference to a client, its data, its personal adapter or a raw probe output:
only public suites, the schema, the sums and what it derived (a test walks its object graph).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openpfi.errors import UserError
from openpfi.monitor.audit import AuditLog, atomic_write_text
from openpfi.monitor.detection.bank import DetectorBank
from openpfi.monitor.modes import MODES
from openpfi.monitor.privacy.ledger import PrivacyLedger
from openpfi.monitor.privacy.mechanism import release_allowed, split_noise, validate_report
from openpfi.monitor.reporting.report import build_report, write_report
from openpfi.monitor.types import MetricPoint, StreamName, stream_mode
from openpfi.monitor.update_ledger import update_sections
from openpfi.monitor.vector.derive import derive_metrics
from openpfi.monitor.vector.schema import ReportSchema
from openpfi.strategies.monitor_global import GlobalMonitor
from openpfi.strategies.round_result import RoundResult

log = logging.getLogger(__name__)

STATE_DIR = "monitor"

def point_to_dict(p: MetricPoint) -> dict[str, float]:
    return {"value": p.value, "lo": p.lo, "hi": p.hi, "n": p.n_clients}


def point_from_dict(d: Mapping[str, Any]) -> MetricPoint:
    return MetricPoint(float(d["value"]), float(d["lo"]), float(d["hi"]), int(d.get("n", 0)))


@dataclass(frozen=True)
class MonitorServerSettings:
    noise_multiplier: float
    l2_clip: float
    n_expected: int
    """Reports the clients' noise shares are sized for (clients sampled per round)."""
    min_clients: int
    delta: float
    reject_k: float = 6.0
    ood_max_nll: float = 8.0
    measured_exact: bool = False
    """Every valid report has ``adaptation_misalignment.measured`` = 1 (all clients probe before
    training and no report is clipped): its sum is the number of reports, known without noise."""
    own_bound: float = 0.0
    """Sensitivity of the report's own-budget slots (``ReportSchema.own_bound``; 0: none)."""
    adaptation_share: float = 0.5
    """Their share of the round's privacy budget (``privacy.split_noise``)."""

    @property
    def noise_std_sum(self) -> float:
        """Std of the noise on the sum of a clipped slot."""
        return split_noise(self.noise_multiplier, self.l2_clip, self.own_bound, self.adaptation_share)[0]

    @property
    def own_noise_std_sum(self) -> float:
        """Std of the noise on the sum of an own-budget slot (0: none)."""
        return split_noise(self.noise_multiplier, self.l2_clip, self.own_bound, self.adaptation_share)[1]

    def noise_std_client(self, schema: ReportSchema) -> np.ndarray:
        """Per slot, the std of one client's noise share."""
        return schema.slot_noise(self.noise_std_sum, self.own_noise_std_sum) / math.sqrt(self.n_expected)


class MonitorServer:
    """The monitor's round hook (see the module docstring). Build with :meth:`create` or :meth:`restore`."""

    def __init__(
        self,
        run_dir: Path,
        schema: ReportSchema,
        settings: MonitorServerSettings,
        bank: DetectorBank,
        ledger: PrivacyLedger,
        global_monitor: GlobalMonitor | None,
        reference: Mapping[str, MetricPoint],
        base_model: Mapping[str, float],
        history: list[dict[str, Any]] | None = None,
        alarms: list[dict[str, Any]] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.schema = schema
        self.settings = settings
        self.bank = bank
        self.ledger = ledger
        self.global_monitor = global_monitor
        self.power: dict[str, Any] = {}
        """The run's power plans (assembly/monitor_power.py): what every stream can detect, for the report."""
        """The server's scoring and paired tests of the global model (strategies/monitor_global.py)."""
        self.reference = dict(reference)
        self.base_model = dict(base_model)
        self.history: list[dict[str, Any]] = list(history or [])
        self.alarms: list[dict[str, Any]] = list(alarms or [])

    # -- the engine's report check ----------------------------------------------------------------
    def validate(self, vec: Any) -> str | None:
        """Why a client's report must stay out of the sum, or None (engines/rounds.py)."""
        s = self.settings
        return validate_report(vec, self.schema.lo, self.schema.hi, len(self.schema), s.noise_std_client(self.schema),
                               s.reject_k)

    # -- the round hook ---------------------------------------------------------------------------
    def __call__(self, result: RoundResult) -> None:
        s, round_num, row = self.settings, result.round, result.row
        audit = AuditLog(self.run_dir / "audit.jsonl")
        for bad in result.rejected:
            audit.append("rejected_report", {"round": round_num, **asdict(bad)})
        summed = None if result.monitor is None else result.monitor.vector
        n = result.monitor.clients if result.monitor is not None else 0
        released = n > 0 and release_allowed(n, s.min_clients)
        sent = result.answered
        n_expected = max(s.n_expected, n)
        entry = self.ledger.record(round_num, s.noise_multiplier, s.l2_clip, n, released, n_expected)
        points: dict[str, MetricPoint] = {}
        sigma = s.noise_std_sum * math.sqrt(n / n_expected) if n else 0.0
        own_sigma = s.own_noise_std_sum * math.sqrt(n / n_expected) if n else 0.0
        if released:
            exact = {"adaptation_misalignment.measured": float(n)} if s.measured_exact else None
            points = derive_metrics(self.schema, np.asarray(summed, dtype=np.float64), n, sigma,
                                    self.reference, self.base_model, minimum_clients=s.min_clients, exact=exact,
                                    own_noise_std=own_sigma)
        glob, paired, paired_alarms = self.global_monitor.round(round_num) if self.global_monitor else ({}, {}, [])
        streams = {**points, **glob}
        new_alarms = self.bank.update(round_num, points) + paired_alarms
        audit.append("aggregate", {
            "round": round_num,
            "scope": "clients",
            "released": released,
            "reports": n,
            "reports_expected": n_expected,
            "reports_missing": max(sent - n - len(result.rejected), 0),
            "rejected": len(result.rejected),
            "schema_sha256": self.schema.sha256,
            "noise_std_sum": sigma,
            "own_noise_std_sum": own_sigma,
            "epsilon_round": entry.epsilon_round,
            "epsilon_total": entry.epsilon_total,
            "noisy_sum": np.asarray(summed, dtype=np.float64).tolist() if released else None,
            "streams": {k: point_to_dict(p) for k, p in sorted(points.items())},
        })
        if glob:
            audit.append("aggregate", {"round": round_num, "scope": "global_model",
                                       "streams": {k: point_to_dict(p) for k, p in sorted(glob.items())},
                                       "paired_change": paired})
        for a in new_alarms:
            audit.append("alarm", asdict(a))
        self.alarms += [asdict(a) for a in new_alarms]
        self.history.append({"round": round_num, "streams": {k: point_to_dict(p) for k, p in sorted(streams.items())},
                             **({"paired_change": paired} if paired else {})})
        names = {k: StreamName.parse(k) for k in streams}
        for mode in MODES:
            row[mode] = {names[k].within_mode: point_to_dict(p) for k, p in sorted(streams.items())
                         if names[k].mode == mode}
        row["monitor"] = {
            "released": released,
            "reports": n,
            "rejected": [x.client_id for x in result.rejected],
            "noise_std_sum": sigma,
            "own_noise_std_sum": own_sigma,
            "epsilon_round": entry.epsilon_round,
            "epsilon_total": entry.epsilon_total,
            "alarms": [{"stream": a.stream, "magnitude": a.magnitude, "threshold": a.threshold} for a in new_alarms],
            "global_change": {k: {f: v[f] for f in ("change", "se", "margin", "excess", "statistic", "threshold")}
                              for k, v in paired.items()},
        }
        self.ledger.save(self.run_dir)
        self.save_state(round_num)

    # -- resume -----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "bank": self.bank.to_dict(),
            "ledger": self.ledger.to_dict(),
            "history": self.history,
            "alarms": self.alarms,
            "paired": self.global_monitor.state() if self.global_monitor else {},
        }

    def save_state(self, round_num: int) -> None:
        folder = self.run_dir / STATE_DIR
        atomic_write_text(folder / f"state-round-{round_num}.json", json.dumps(self.state(), sort_keys=True) + "\n")
        for old in folder.glob("state-round-*.json"):
            if int(old.stem.rsplit("-", 1)[1]) < round_num - 1:
                old.unlink()

    @staticmethod
    def load_state(run_dir: Path, round_num: int) -> dict[str, Any]:
        path = Path(run_dir) / STATE_DIR / f"state-round-{round_num}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(
                f"cannot resume: the monitor state after round {round_num} ({path}) is missing, and a "
                f"monitored run cannot continue without its detectors and privacy ledger; restore the file "
                f"from a backup of the run folder, or start a new run with `openpfi run`"
            ) from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is not valid JSON ({err}); restore it from a backup") from None

    def restore_state(self, data: Mapping[str, Any]) -> None:
        self.bank = DetectorBank.from_dict(data["bank"])
        self.ledger = PrivacyLedger.from_dict(data["ledger"])
        self.history = list(data.get("history", []))
        self.alarms = list(data.get("alarms", []))
        if self.global_monitor is not None:
            self.global_monitor.restore(data.get("paired", {}))

    # -- report -----------------------------------------------------------------------------------
    def write_report(
        self,
        system: Mapping[str, Any],
        probes: Sequence[Mapping[str, Any]],
        not_measured: Sequence[Mapping[str, Any]],
        refusal_judge: Mapping[str, Any] | None = None,
    ) -> tuple[Path, Path]:
        """report.json + report.html from the history kept so far (``refusal_judge``: the round-0
        validation of the refusal judge, assembly/monitoring.py)."""
        rounds = [{k: h[k] for k in ("round", "streams", "paired_change") if k in h} for h in self.history]
        released = {h["round"] for h in self.history if any(not _is_global(k) for k in h["streams"])}
        withheld = [e.round for e in self.ledger.entries if not e.released]
        nm = list(not_measured)
        if withheld:
            nm.append({"what": "client aggregates of rounds " + ", ".join(map(str, withheld)),
                       "why": f"fewer than privacy.min_clients = {self.settings.min_clients} valid reports: "
                              "withheld, nothing released, no privacy spent"})
        if not released:
            nm.append({"what": "client-side streams", "why": "no round released a client aggregate"})
        seen = {stream_mode(k) for h in self.history for k in h["streams"] if not _is_global(k)}
        sigma = self.settings.noise_std_sum
        if released and "adaptation_misalignment" not in seen and "adaptation_misalignment.measured" in self.schema.index:
            nm.append({"mode": "adaptation_misalignment", "what": "change of capability and safety within the round",
                       "why": f"the DP count of clients probed before training never reached max(1, 2 sigma) = "
                              f"{max(1.0, 2 * sigma):.3g} (sigma = noise_multiplier x l2_clip = {sigma:.3g}): too few "
                              "clients per round for this noise; raise federation.clients_per_round or lower "
                              "privacy.noise_multiplier"})
        if released and self.schema.keys("fairness_collapse.group_count") and not any(
                ".utility_group_mean." in k for h in self.history for k in h["streams"]):
            nm.append({"mode": "fairness_collapse", "what": "utility per group and gaps across groups",
                       "why": f"no group's DP client count reached max(1, 2 sigma) = {max(1.0, 2 * sigma):.3g}"})
        report = build_report(
            self.run_dir,
            system=system,
            rounds=rounds,
            alarms=self.alarms,
            thresholds=self.bank.config(),
            privacy={**self.ledger.to_dict(), **update_sections(self.run_dir)},  # + the updates' ledger, if any
            probes=probes,
            not_measured=nm,
            refusal_judge=refusal_judge,
            power=self.power,
        )
        return write_report(self.run_dir, report)


def _is_global(stream: str) -> bool:
    return StreamName.parse(stream).scope == "global"
