"""Which changes could a finished run's client-report streams have seen at all?

    python benchmarks/silent/detectability.py RUN [RUN ...] [--mode MODE]

For every change-detector stream of each run's report.json (the client-report streams; the
server's global-model streams have their paired test instead), prints the median std of a
round's point (sampling + DP noise), the even-odds shift within 3 rounds of onset
(``monitor.power``), and the largest move the stream actually made from its reference in the
bad direction. A stream whose detectable shift exceeds anything its metric can plausibly do
was blind in that run, whatever the injection did. Reads report.json only; changes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from openpfi.monitor.detection.bank import DetectorBank
from openpfi.monitor.detection.power import stream_detectability


def _moved(series: list[dict], direction: str) -> float | None:
    vals = [p["value"] for p in series if p.get("value") is not None]
    if len(vals) < 2:
        return None
    diffs = [v - vals[0] for v in vals[1:]]
    if direction == "decrease":
        return max(-d for d in diffs)
    if direction == "increase":
        return max(diffs)
    return max(abs(d) for d in diffs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--mode", action="append", default=[], help="only this mode (repeatable)")
    args = ap.parse_args()
    for run in args.runs:
        report = json.loads((run / "report.json").read_text())
        det = report["detector"]
        bank = DetectorBank.from_config(det)
        print(f"\n{run}  (detector {det['detector']}, k = {det['drift_k']}, h = {det['threshold']:.2f} one-sided)")
        print(f"{'stream':60s} {'round std':>9s} {'shift needed':>12s} {'moved':>8s}")
        for mode in report["modes"]:
            if args.mode and mode["id"] not in args.mode:
                continue
            for metric in mode["metrics"]:
                if metric["detector"] in ("paired_cusum", "paired_jackknife"):
                    continue
                for s in metric["streams"]:
                    direction = bank.direction(s["name"])
                    d = s.get("detectable") or stream_detectability(s["series"], det, bank.threshold_for(s["name"]),
                                                                     direction)
                    if d is None:
                        continue
                    moved = _moved(s["series"], direction)
                    print(f"{s['name']:60s} {d['round_std']:9.3f} {d['shift']:12.3f} "
                          f"{'-' if moved is None else f'{moved:8.3f}':>8s}")


if __name__ == "__main__":
    main()
