"""The audit log against a forger: checkpoint heads, an external head, signatures, torn tails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openpfi.errors import UserError
from openpfi.monitor.audit import AuditLog, canonical, entry_hash, verify
from openpfi.monitor.audit_sign import enable, generate_key


def _log(folder: Path, n: int = 3) -> AuditLog:
    log = AuditLog(folder)
    for i in range(n):
        log.append("round", {"round": i + 1})
    return log


def _forge(folder: Path, line: int) -> None:
    """Edit one entry and recompute every hash after it, and the head: a consistent forgery."""
    entries = [json.loads(x) for x in (folder / "audit.jsonl").read_text().splitlines()]
    entries[line - 1]["payload"] = {"round": 99}
    prev = entries[line - 2]["hash"] if line > 1 else "0" * 64
    for e in entries[line - 1:]:
        e["prev"] = prev
        e["hash"] = entry_hash(e)
        prev = e["hash"]
    (folder / "audit.jsonl").write_bytes(b"".join(canonical(e) + b"\n" for e in entries))
    (folder / "audit.head").write_text(json.dumps({"count": len(entries), "hash": prev}))


def test_a_rehashed_forgery_passes_the_chain_but_not_the_anchors(tmp_path: Path) -> None:
    # Prepare: a checkpoint that recorded the head after entry 2, and the final head kept elsewhere
    log = _log(tmp_path, 2)
    ckpt = tmp_path / "checkpoints" / "round-1"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"round": 1, "audit_head": {"count": log.count, "hash": log.last_hash}}))
    log.append("round", {"round": 2})
    kept = log.last_hash
    assert verify(tmp_path, head=kept).ok and verify(tmp_path).anchors == 1
    # Execute: forge entry 3 (after the checkpoint): the checkpoint still matches, the external head does not
    _forge(tmp_path, 3)
    # Assert
    assert verify(tmp_path).ok
    res = verify(tmp_path, head=kept)
    assert not res.ok and "not an entry of the chain" in (res.problem or "")
    # forging entry 1 (before the checkpoint) is caught by the checkpoint's head alone
    _forge(tmp_path, 1)
    assert "round-1's audit head" in (verify(tmp_path).problem or "")


def test_signed_entries_and_a_forger_without_the_key(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    # Prepare
    public = generate_key(tmp_path / "owner.pem")
    run = tmp_path / "run"
    run.mkdir()
    enable(run, str(tmp_path / "owner.pem"))
    _log(run, 3)
    # Execute / Assert: every entry verifies against the owner's public key
    res = verify(run, public_key=public)
    assert res.ok and res.signed
    _forge(run, 2)  # rehashed, but the signatures are the old ones
    res = verify(run, public_key=public)
    assert not res.ok and "signature" in (res.problem or "")
    with pytest.raises(UserError, match="exists"):
        generate_key(tmp_path / "owner.pem")


def test_a_torn_append_is_repaired_on_the_next_open(tmp_path: Path) -> None:
    # Prepare: a kill in the middle of writing entry 3 (the head still counts 2)
    log = _log(tmp_path, 2)
    with open(tmp_path / "audit.jsonl", "ab") as f:
        f.write(b'{"hash": "abc", "kin')
    assert not verify(tmp_path).ok
    # Execute
    again = AuditLog(tmp_path)
    # Assert: the torn bytes are gone, the repair is logged, the chain continues
    assert again.count == 3 and verify(tmp_path).ok
    last = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "action" and "torn" in last["payload"]["repaired"]
    assert log.count == 2
