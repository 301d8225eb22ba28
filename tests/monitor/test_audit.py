from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from openpfi.errors import UserError
from openpfi.monitor.audit import GENESIS, AuditLog, canonical, read_entries, verify
from openpfi.monitor.types import Alarm


def make_log(tmp_path: Path, n: int = 5) -> Path:
    log = AuditLog(tmp_path)
    log.append("config", {"seed": 0, "model": "tiny-random"})
    for r in range(n - 1):
        log.append("aggregate", {"round": r, "sum": [1.5 * r, -0.25], "note": "ünïcode"})
    return tmp_path


def lines(run: Path) -> list[str]:
    return (run / "audit.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)


def write(run: Path, ls: list[str]) -> None:
    (run / "audit.jsonl").write_text("".join(ls), encoding="utf-8")


def test_chain_format_and_hashes(tmp_path: Path) -> None:
    # Prepare / Execute
    run = make_log(tmp_path, 3)
    entries = [json.loads(x) for x in lines(run)]
    # Assert: canonical lines, sha256 of the entry without "hash", prev links, seq from 1
    for i, (raw, e) in enumerate(zip(lines(run), entries, strict=True), start=1):
        assert raw == canonical(e).decode() + "\n"
        body = json.dumps({k: v for k, v in e.items() if k != "hash"}, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()  # fmt: skip
        assert e["hash"] == hashlib.sha256(body).hexdigest()
        assert e["seq"] == i
        assert e["prev"] == (GENESIS if i == 1 else entries[i - 2]["hash"])
    head = json.loads((run / "audit.head").read_text())
    assert head == {"count": 3, "hash": entries[-1]["hash"]}
    res = verify(run)
    assert res.ok and res.entries == 3 and res.problem is None and res.head_hash == entries[-1]["hash"]


def test_payloads_from_numpy_and_dataclasses(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    alarm = Alarm("amplified_bias", "amplified_bias.score", 3, 5.2, "cusum", 4.0, {"z": 2.1})
    log.append("alarm", alarm)
    log.append("aggregate", {"v": np.arange(3, dtype=np.float32), "n": np.int64(4), "bad": float("nan")})
    e = read_entries(tmp_path)
    assert e[0]["payload"]["stream"] == "amplified_bias.score" and e[0]["payload"]["evidence"] == {"z": 2.1}
    assert e[1]["payload"] == {"v": [0.0, 1.0, 2.0], "n": 4, "bad": None}
    assert verify(tmp_path).ok


def test_resume_continues_the_chain(tmp_path: Path) -> None:
    run = make_log(tmp_path, 3)
    log = AuditLog(run)
    h = log.append("action", {"what": "resume"})
    res = verify(run)
    assert res.ok and res.entries == 4 and res.head_hash == h
    assert json.loads(lines(run)[-1])["seq"] == 4


def test_edit_without_rehash_names_the_line(tmp_path: Path) -> None:
    run = make_log(tmp_path)
    ls = lines(run)
    ls[2] = ls[2].replace('"round":1', '"round":7')
    write(run, ls)
    res = verify(run)
    assert not res.ok and res.entries == 2
    assert res.problem.startswith("line 3: hash does not match")


def test_edit_with_rehash_breaks_the_next_link(tmp_path: Path) -> None:
    run = make_log(tmp_path)
    ls = lines(run)
    e = json.loads(ls[1])
    e["payload"]["round"] = 42
    e["hash"] = hashlib.sha256(canonical({k: v for k, v in e.items() if k != "hash"})).hexdigest()
    ls[1] = canonical(e).decode() + "\n"
    write(run, ls)
    res = verify(run)
    assert not res.ok and res.problem.startswith("line 3: prev does not match")


def test_last_entry_replaced_is_caught_by_the_head(tmp_path: Path) -> None:
    run = make_log(tmp_path)
    ls = lines(run)
    e = json.loads(ls[-1])
    e["payload"]["round"] = 42
    e["hash"] = hashlib.sha256(canonical({k: v for k, v in e.items() if k != "hash"})).hexdigest()
    ls[-1] = canonical(e).decode() + "\n"
    write(run, ls)
    res = verify(run)
    assert not res.ok and res.problem.startswith("line 5: hash differs from the one in audit.head")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda ls: ls[:2] + ls[3:], "line 3: seq is 4, expected 3"),  # deletion
        (lambda ls: ls[:2] + [ls[1]] + ls[2:], "line 3: seq is 2, expected 3"),  # insertion (duplicate)
        (lambda ls: [ls[0], ls[2], ls[1]] + ls[3:], "line 2: seq is 3, expected 2"),  # reordering
        (lambda ls: ls[:-1], "audit.head records 5 entries but audit.jsonl has 4"),  # truncation
        (lambda ls: ls[:-1] + [ls[-1].rstrip("\n")], "line 5 does not end with a newline"),  # torn
        (lambda ls: [ls[0].replace(",", ", ", 1)] + ls[1:], "line 1 is not in canonical form"),  # reformatted
        (lambda ls: ls[:3] + ["{not json\n"] + ls[4:], "line 4 is not valid JSON"),
    ],
)
def test_tampering_is_detected(tmp_path: Path, change, expected: str) -> None:
    run = make_log(tmp_path)
    write(run, change(lines(run)))
    res = verify(run)
    assert not res.ok
    assert res.problem.startswith(expected), res.problem


def test_missing_head_and_missing_log(tmp_path: Path) -> None:
    assert "no audit.jsonl" in verify(tmp_path).problem
    run = make_log(tmp_path)
    (run / "audit.head").unlink()
    res = verify(run)
    assert not res.ok and "audit.head is missing" in res.problem


def test_damaged_log_refuses_appends(tmp_path: Path) -> None:
    run = make_log(tmp_path)
    write(run, lines(run)[:-1])
    with pytest.raises(UserError, match="damaged.*truncated.*openpfi audit verify"):
        AuditLog(run)
    (run / "audit.jsonl").unlink()
    with pytest.raises(UserError, match="was deleted"):
        AuditLog(run)


def test_crash_between_append_and_head_update_is_recovered(tmp_path: Path) -> None:
    run = make_log(tmp_path, 3)
    old_head = (run / "audit.head").read_text()
    AuditLog(run).append("action", {"x": 1})
    (run / "audit.head").write_text(old_head)  # as if the process died before replacing the head
    assert verify(run).ok
    AuditLog(run)  # reopening repairs the head
    assert json.loads((run / "audit.head").read_text())["count"] == 4
    # but a head two entries behind is not a crash
    AuditLog(run).append("action", {"x": 2})
    (run / "audit.head").write_text(old_head)
    assert "head does not match" in verify(run).problem
