from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from openpfi.monitor.audit import AuditLog, verify
from openpfi.monitor.detection.bank import DetectorBank
from openpfi.monitor.modes import MODES
from openpfi.monitor.privacy.ledger import PrivacyLedger
from openpfi.monitor.reporting.html import render_html
from openpfi.monitor.reporting.report import build_report, write_report
from openpfi.monitor.reporting.summary import print_summary
from openpfi.monitor.types import MetricPoint

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def need_chromium() -> None:
    """Skip locally without Chromium; fail in CI, which installs it."""
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail("CI must install chromium and chromium-driver (apt-get install chromium chromium-driver)")
    pytest.skip("chromium is not installed (apt-get install chromium chromium-driver)")


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, dict, PrivacyLedger, list]:
    """Eleven rounds of synthetic streams for five modes; bias steps up at round 6."""
    rng = np.random.default_rng(0)
    bank = DetectorBank("cusum", 6.0, 0.5, reference="known")
    log = AuditLog(tmp_path)
    log.append("config", {"seed": 0})
    ledger = PrivacyLedger(delta=1e-5)
    rounds, alarms = [], []
    for r in range(11):
        values = {
            "amplified_bias.bbq_amb_bias.gender": 0.10 + (0.2 if r >= 6 else 0.0),
            "amplified_bias.bbq_amb_bias.age": 0.05,
            "confidence_miscalibration.ece": 0.08,
            "fairness_collapse.utility_spread": 0.4,
            "out_of_domain_degradation.nll.shakespeare": 3.1,
            "alignment_erosion.refusal_rate": 0.8,
        }
        pts = {k: MetricPoint(v + 0.005 * rng.standard_normal(), v - 0.04, v + 0.04, 8) for k, v in values.items()}
        new = bank.update(r, pts)
        for a in new:
            log.append("alarm", a)
        alarms += new
        ledger.record(r, 1.5, 1.0, 8 if r != 2 else 1, r != 2)
        log.append("aggregate", {"round": r})
        rounds.append({"round": r, "streams": {k: {"value": p.value, "lo": p.lo, "hi": p.hi} for k, p in pts.items()}})
    ledger.save(tmp_path)
    report = build_report(
        tmp_path,
        system={"name": "clinic-assistant", "version": "2.0.1", "model": "tiny-random", "intended_purpose": "FAQ"},
        rounds=rounds,
        alarms=alarms,
        thresholds=bank.config(),
        privacy=ledger,
        probes=[{"suite": "bbq", "version": "1", "sha256": "a" * 64, "items": 40}],
        not_measured=[{"mode": "adaptation_misalignment", "what": "before/after probes", "why": "probes disabled"}],
    )
    return tmp_path, report, ledger, alarms


def test_report_json_content(run) -> None:
    # Prepare
    run_dir, report, ledger, alarms = run
    # Execute
    jpath, _ = write_report(run_dir, report)
    data = json.loads(jpath.read_text(encoding="utf-8"))
    # Assert: the file is the dict
    assert data == report
    assert [m["id"] for m in data["modes"]] == list(MODES)
    status = {m["id"]: m["status"] for m in data["modes"]}
    assert status == {
        "amplified_bias": "alarm",
        "confidence_miscalibration": "ok",
        "fairness_collapse": "ok",
        "adaptation_misalignment": "not_measured",
        "out_of_domain_degradation": "ok",
        "alignment_erosion": "ok",
    }
    # the step at round 6 of size 0.2 / std 0.0204 alarms at round 6 (z ~ 9.8 > 6 + 0.5), and
    # again every round after it: the detector resets after an alarm and the shift persists
    gender_name = "amplified_bias.bbq_amb_bias.gender"
    assert [(a["stream"], a["round"]) for a in data["alarms"]] == [(gender_name, r) for r in range(6, 11)]
    assert alarms[0].round == 6 and alarms[0].evidence["value"] == pytest.approx(0.3, abs=0.02)
    bias = data["modes"][0]
    gender = next(s for s in bias["metrics"][0]["streams"] if s["group"] == "gender")
    assert 6 in gender["alarm_rounds"] and len(gender["series"]) == 11
    assert gender["series"][6]["statistic"] > 6.0 and gender["series"][5]["statistic"] < 6.0
    assert bias["metrics"][0]["threshold"] == 6.0 and bias["metrics"][0]["direction"] == "increase"
    assert "MEASURE 2.11" in bias["nist"]
    mis = data["modes"][3]
    assert mis["not_measured_why"] == ["probes disabled"]
    # privacy, probes, evidence, plan
    assert data["privacy"]["epsilon_total"] == pytest.approx(ledger.epsilon_total)
    assert data["privacy"]["rounds_withheld"] == 1
    assert data["probes"][0]["sha256"] == "a" * 64
    assert data["evidence_log"]["verified"] and data["evidence_log"]["head_hash"] == verify(run_dir).head_hash
    titles = [s["title"] for s in data["monitoring_plan"]["sections"]]
    for t in ("System and version", "Intended purpose", "Thresholds", "Escalation procedure", "Evidence log"):
        assert t in titles
    assert {"MEASURE 2.10"} <= {f for r in data["nist_ai_rmf"] for f in r["functions"]}


def test_report_html_is_self_contained(run) -> None:
    run_dir, report, _, _ = run
    _, hpath = write_report(run_dir, report)
    html = hpath.read_text(encoding="utf-8")
    assert html.count("class='mode-panel") == 6
    for mode in MODES:
        assert f"data-mode='{mode}'" in html
    assert "Not measured: probes disabled" in html
    assert report["evidence_log"]["head_hash"] in html
    assert "amplified_bias.bbq_amb_bias.gender" in html
    # no remote loads, no scripts
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html


def test_tampered_log_shows_in_the_report(run) -> None:
    run_dir, _, _, _ = run
    lines = (run_dir / "audit.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "audit.jsonl").write_text("".join(lines[:1] + lines[2:]))
    rep = build_report(
        run_dir, system={}, rounds=[], alarms=[], thresholds={}, privacy=None, probes=[], not_measured=[]
    )
    assert not rep["evidence_log"]["verified"] and "line 2" in rep["evidence_log"]["problem"]
    assert rep["summary"]["modes_not_measured"] == list(MODES)


def test_refusal_judge_figures_go_to_report_json_and_the_alignment_erosion_panel(run) -> None:
    # Prepare
    run_dir, _, _, _ = run
    rj = {
        "detector": {"n": 297, "precision": 0.913, "recall": 0.857, "labelled_set": "held-out",
                     "in_sample": {"n": 351, "precision": 1.0, "recall": 1.0}},
        "prompts": 8, "max_new_tokens": 32,
        "judge_vs_detector": {"n": 8, "tp": 2, "fp": 1, "fn": 1, "tn": 4, "precision": 2 / 3, "recall": 2 / 3,
                              "agreement": 0.75},
    }
    kw = {"system": {}, "rounds": [], "alarms": [], "thresholds": {}, "privacy": None, "probes": [], "not_measured": []}
    # Execute
    report = build_report(run_dir, refusal_judge=rj, **kw)
    jpath, hpath = write_report(run_dir, report)
    # Assert
    assert json.loads(jpath.read_text())["refusal_judge"] == rj
    html = hpath.read_text(encoding="utf-8")
    panel = html[html.index("data-mode='alignment_erosion'"):]
    panel = panel[: panel.index("</section>")]
    assert "297 held-out labelled texts: precision 0.913, recall 0.857" in panel
    assert "351 texts its patterns were written from" in panel
    assert "to 8 held-out prompts: agreement 0.75, precision 0.667, recall 0.667" in panel
    assert "refusals: judge 3, detector 3 of 8" in panel
    off = build_report(run_dir, refusal_judge={**rj, "prompts": 0, "judge_vs_detector": None,
                                               "why": "monitor.judge_check_prompts = 0"}, **kw)
    assert "not checked against generated answers (monitor.judge_check_prompts = 0)" in render_html(off)
    old = build_report(run_dir, **kw)
    assert old["refusal_judge"] is None and "not validated in this run" in render_html(old)


def _summary_rows(report: dict) -> dict[str, str]:
    from rich.console import Console

    console = Console(record=True, width=260)
    console.print(print_summary(report))
    text = console.export_text()
    rows = {m: next(line for line in text.splitlines() if line.startswith(f"│ {m} ")) for m in MODES}
    return {**rows, "text": text}


def test_print_summary_gives_each_mode_its_verdict_alarms_and_what_it_can_see(run) -> None:
    # Prepare: the fixture's streams have intervals of +-0.04 (std 0.0204) and a known reference
    _, report, ledger, _ = run
    # Execute
    rows = _summary_rows(report)
    # Assert: one row per mode, with its own verdict and alarm count
    assert "watching" in rows["amplified_bias"] and "5 r6 amplified_bias.bbq_amb_bias.gender" in rows["amplified_bias"]
    assert "flags a change of" in rows["amplified_bias"] and "(margin 0.1)" in rows["amplified_bias"]
    assert "blind" in rows["adaptation_misalignment"] and "│ 0 " in rows["adaptation_misalignment"]
    for mode in ("confidence_miscalibration", "alignment_erosion"):
        assert "watching" in rows[mode] and "│ 0 " in rows[mode], rows[mode]
    # the header counts the modes watching, the rounds monitored exclude round 0 (the references)
    watching = report["summary"]["modes_watching"]
    assert f"{len(watching)} / 6 modes watching, 10 rounds monitored" in rows["text"]
    assert f"privacy: epsilon {ledger.epsilon_total:.3g} at delta 1e-05" in rows["text"]
    assert f"head {report['evidence_log']['head_hash']}, verified" in rows["text"]


def test_a_mode_that_cannot_see_its_margin_is_never_watching(run) -> None:
    # Prepare: the same streams, 20x wider intervals (a DP noise larger than the metrics can move)
    run_dir, report, _, _ = run
    wide = []
    for mode in report["modes"]:
        for m in mode["metrics"]:
            for st in m["streams"]:
                for p in st["series"]:
                    wide.append((p["round"], st["name"], p["value"], p["value"] - 0.8, p["value"] + 0.8))
    rounds = [{"round": r, "streams": {n: {"value": v, "lo": lo, "hi": hi} for rr, n, v, lo, hi in wide if rr == r}}
              for r in range(11)]
    # Execute
    rep = build_report(run_dir, system={}, rounds=rounds, alarms=[], thresholds=report["detector"], privacy=None,
                       probes=[], not_measured=[])
    # Assert
    assert rep["summary"]["modes_watching"] == []
    assert set(rep["summary"]["verdicts"].values()) <= {"weak", "blind"}
    assert "0 / 6" in render_html(rep) and "modes watching" in render_html(rep)


def test_report_renders_in_headless_chromium(run, tmp_path_factory) -> None:
    need_chromium()
    run_dir, report, _, _ = run
    _, hpath = write_report(run_dir, report)
    tmp = tmp_path_factory.mktemp("chromium")
    shot = tmp / "shot.png"
    subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}", f"--screenshot={shot}", "--window-size=1280,4000",
            hpath.resolve().as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 50_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_has_six_panels_and_no_console_errors(run, tmp_path_factory, monkeypatch) -> None:
    need_chromium()
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must not go online
    if not CHROMEDRIVER.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium-driver")
        pytest.skip("chromedriver is not installed (apt-get install chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    run_dir, report, _, _ = run
    _, hpath = write_report(run_dir, report)
    opts = webdriver.ChromeOptions()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                "--disable-background-networking", "--disable-component-update", "--window-size=1280,4000",
                f"--user-data-dir={tmp_path_factory.mktemp('selenium')}"):  # fmt: skip
        opts.add_argument(arg)
    opts.binary_location = str(CHROMIUM)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    try:
        driver.get(hpath.resolve().as_uri())
        panels = driver.find_elements(By.CLASS_NAME, "mode-panel")
        assert len(panels) == 6
        assert all(p.is_displayed() and p.size["height"] > 50 for p in panels)
        assert [p.get_attribute("data-mode") for p in panels] == list(MODES)
        assert len(driver.find_elements(By.CSS_SELECTOR, ".mode-panel svg.chart")) >= 10
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []
    finally:
        driver.quit()


def test_ci_fails_without_chromium(monkeypatch) -> None:
    # the skip/fail rule itself
    monkeypatch.setitem(globals(), "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception):
        need_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        need_chromium()


def test_missing_intended_purpose_names_the_real_config_key() -> None:
    from openpfi.config import MonitorConfig
    from openpfi.monitor.reporting.sections import monitoring_plan

    plan = monitoring_plan({"name": "x"}, [], {}, {}, {})
    content = next(s["content"] for s in plan["sections"] if s["id"] == "intended_purpose")
    assert content == "not stated: set monitor.intended_purpose in the config"
    assert "intended_purpose" in MonitorConfig.model_fields
