"""Bookkeeping of the silent-failure benchmark: detection, delay, false alarms, coverage.

Pure functions on alarm lists (``{"mode", "round", ...}`` dicts, as in report.json and
audit.jsonl), so they are checked exactly on hand-made lists.

For one run with onset round ``r0`` (the first round the injected clients train on
injected data; its own report already reflects it) and expected mode ``m``:

- ``delay`` = (first alarm on ``m`` in a round >= r0) - r0; 0 = flagged in the onset round.
- ``detected`` = ``delay < within``: flagged within the first ``within`` (default 3) rounds of the
  injection, i.e. by round r0 + 2.
- false alarms: every alarm on a control; in an injected run, every alarm on a mode other
  than ``m`` and every alarm on ``m`` before ``r0``, except alarms from ``r0`` on on a mode in
  ``also`` (the modes the injection is known to cause as well, measured outside the monitor
  and named in the scenario file): those are neither required nor false.
- ``late`` = an alarm on ``m`` came, but only after the window.

Over the runs (seeds) of the scenarios of one mode, the coverage cell is
``direct`` when every run detected it within the window, ``proxy`` when the injected
failure raised some alarm after onset in at least one run (the right mode late or in
some seeds only, or another mode), ``none`` otherwise (or when no scenario tests it).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from openpfi.monitor.modes import MODES


@dataclass(frozen=True)
class RunScore:
    expect: str
    onset: int | None
    detected: bool
    delay: int | None
    late: bool
    false_alarms: int
    false_alarm_modes: tuple[str, ...]
    alarms_after_onset: int
    modes_alarmed: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["false_alarm_modes"] = list(self.false_alarm_modes)
        d["modes_alarmed"] = list(self.modes_alarmed)
        return d


def score_run(alarms: Iterable[Mapping[str, Any]], expect: str, onset: int | None, within: int = 3,
              also: Sequence[str] = ()) -> RunScore:
    """Score one run's alarms against its ground truth (module docstring)."""
    items = sorted(((int(a["round"]), str(a["mode"])) for a in alarms), key=lambda x: (x[0], x[1]))
    modes = tuple(sorted({m for _, m in items}))
    if expect == "none" or onset is None:
        return RunScore(expect, None, False, None, False, len(items), modes, 0, modes)
    hits = [r for r, m in items if m == expect and r >= onset]
    delay = hits[0] - onset if hits else None
    detected = delay is not None and delay < within
    false = [(r, m) for r, m in items if r < onset or (m != expect and m not in also)]
    after = sum(1 for r, _ in items if r >= onset)
    return RunScore(
        expect,
        onset,
        detected,
        delay,
        delay is not None and not detected,
        len(false),
        tuple(sorted({m for _, m in false})),
        after,
        modes,
    )


@dataclass
class ScenarioSummary:
    """One scenario over its seeds."""

    scenario: str
    expect: str
    runs: int
    detected_runs: int
    delays: list[int] = field(default_factory=list)
    false_alarms: int = 0
    false_alarm_modes: list[str] = field(default_factory=list)
    any_alarm_after_onset_runs: int = 0

    @property
    def detection_rate(self) -> float:
        return self.detected_runs / self.runs if self.runs else 0.0

    @property
    def median_delay(self) -> float | None:
        return float(statistics.median(self.delays)) if self.delays else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "detection_rate": self.detection_rate, "median_delay": self.median_delay}


def summarize(scenario: str, scores: Sequence[RunScore]) -> ScenarioSummary:
    expect = scores[0].expect if scores else "none"
    s = ScenarioSummary(scenario, expect, len(scores), sum(x.detected for x in scores))
    s.delays = [x.delay for x in scores if x.delay is not None]
    s.false_alarms = sum(x.false_alarms for x in scores)
    s.false_alarm_modes = sorted({m for x in scores for m in x.false_alarm_modes})
    s.any_alarm_after_onset_runs = sum(1 for x in scores if x.alarms_after_onset > 0)
    return s


def coverage(summaries: Sequence[ScenarioSummary]) -> dict[str, str]:
    """Mode -> "direct" / "proxy" / "none", from the injected scenarios' summaries (module docstring)."""
    out: dict[str, str] = {}
    for mode in MODES:
        own = [s for s in summaries if s.expect == mode and s.runs > 0]
        if own and all(s.detected_runs == s.runs for s in own):
            out[mode] = "direct"
        elif any(s.detected_runs > 0 or s.delays or s.any_alarm_after_onset_runs > 0 for s in own):
            out[mode] = "proxy"
        else:
            out[mode] = "none"
    return out


def coverage_row(cov: Mapping[str, str], label: str = "openpfi (measured)") -> str:
    """The landscape-matrix row: ``| label | direct | proxy | ... |`` in MODES order."""
    return "| " + " | ".join([label, *(cov.get(m, "none") for m in MODES)]) + " |"


def coverage_header() -> str:
    names = [m.replace("_", " ") for m in MODES]
    return "| benchmark | " + " | ".join(names) + " |\n|---|" + "---|" * len(MODES)
