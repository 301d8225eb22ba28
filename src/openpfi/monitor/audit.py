"""Hash-chained, append-only audit log of a run: ``audit.jsonl`` + ``audit.head``.

Each line of ``audit.jsonl`` is the canonical JSON (sorted keys, no
whitespace, UTF-8) of one entry::

    {"hash": h_n, "kind": ..., "payload": {...}, "prev": h_{n-1}, "seq": n, "time": ...}
    h_n = sha256(canonical(entry without "hash"))         h_0 = "0" * 64

so an edit of any entry changes its hash and breaks the ``prev`` link of the
next one; a deletion, insertion or reordering breaks ``seq`` and ``prev``
(a hash chain / linked timestamping, Haber & Stornetta 1991). A chain alone
cannot show that its *tail* was cut off, so ``audit.head`` records the entry
count and the last hash (written atomically after every append); a shorter
file than the head says is a truncation.

An unkeyed chain alone does not stop a forger: whoever can rewrite the whole file
and the head can recompute every hash after an edit. Three anchors make that
detectable:

- every round's head (entry count and hash, after the round's ``round`` entry) is
  also written into that round's checkpoint (``checkpoints/round-N/state.json``
  ``audit_head``), and :func:`verify` checks each against the chain;
- ``openpfi run`` prints the final head; kept elsewhere (a ticket, a signed e-mail, a
  timestamping service) it is checked by ``openpfi audit verify DIR --head HASH``:
  the hash must be an entry of the chain, so a rewritten log fails;
- optionally each entry is signed (ed25519, a key the run owner holds; ``sig``, see
  monitor/audit_sign.py), checked with ``--public-key``.

A kill in the middle of an append leaves an unterminated last line that the head
never counted; the next appender removes it and logs the repair (``action``).

Kinds written by openpfi: ``config``, ``probes``, ``dp_parameters``, ``aggregate``,
``alarm``, ``rejected_report``, ``rejected_update``, ``round``, ``action``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from openpfi.errors import UserError

LOG_FILE = "audit.jsonl"
HEAD_FILE = "audit.head"
GENESIS = "0" * 64
KINDS: tuple[str, ...] = ("config", "probes", "dp_parameters", "aggregate", "alarm", "rejected_report",
                          "rejected_update", "round", "action")
_FIELDS = frozenset({"seq", "time", "kind", "payload", "prev", "hash"})
_SIGNED = _FIELDS | {"sig"}


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder + fsync + ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def jsonable(obj: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays, dataclasses, paths, tuples; NaN/inf -> None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"cannot write {type(obj).__name__} to the audit log")


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def entry_hash(entry: dict) -> str:
    """``sha256(canonical(entry without "hash" and "sig"))`` as hex."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k not in ("hash", "sig")})).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`. ``entries``: valid entries before the first problem."""

    ok: bool
    entries: int
    problem: str | None = None
    head_hash: str | None = None
    anchors: int = 0
    """Checkpoint heads (``audit_head``) found in the chain."""
    signed: bool = False
    """Every entry carries a valid signature (checked against the given or recorded public key)."""


def _paths(run_dir: Path | str) -> tuple[Path, Path]:
    p = Path(run_dir)
    if p.name == LOG_FILE or p.suffix == ".jsonl":
        return p, p.with_name(HEAD_FILE)
    return p / LOG_FILE, p / HEAD_FILE


def _check_lines(lines: list[bytes], public: Any = None) -> tuple[int, str | None, str]:
    """Walk the chain (and, with ``public``, every signature); return (valid entries, first problem
    or None, last valid hash)."""
    prev = GENESIS
    for i, raw in enumerate(lines, start=1):
        where = f"line {i}"
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return i - 1, f"{where} is not valid JSON (edited, or a torn write)", prev
        if not isinstance(entry, dict) or set(entry) not in (_FIELDS, _SIGNED):
            return i - 1, f"{where} does not have exactly the fields {sorted(_FIELDS)} (and sig)", prev
        if not isinstance(entry["hash"], str) or not isinstance(entry["seq"], int):
            return i - 1, f"{where}: hash or seq has the wrong type (the entry was edited)", prev
        if entry_hash(entry) != entry["hash"]:
            return i - 1, f"{where}: hash does not match the entry's content (the entry was edited)", prev
        if canonical(entry) != raw:
            return i - 1, f"{where} is not in canonical form (the line was re-formatted or edited)", prev
        if entry["seq"] != i:
            return (
                i - 1,
                f"{where}: seq is {entry['seq']}, expected {i} (entries deleted, inserted or reordered)",
                prev,
            )
        if entry["prev"] != prev:
            return i - 1, f"{where}: prev does not match the hash of the entry before it (chain broken)", prev
        if public is not None:
            from openpfi.monitor.audit_sign import signature_ok

            if "sig" not in entry or not signature_ok(public, entry["hash"], entry["sig"]):
                return i - 1, f"{where}: missing or invalid signature (not signed with the run owner's key)", prev
        prev = entry["hash"]
    return len(lines), None, prev


def _read_lines(log: Path) -> tuple[list[bytes], bool]:
    """Lines without their newline, and whether the file ends with a newline."""
    return _read_lines_of(log.read_bytes())


def _read_lines_of(data: bytes) -> tuple[list[bytes], bool]:
    if not data:
        return [], True
    lines = data.split(b"\n")
    terminated = lines[-1] == b""
    if terminated:
        lines.pop()
    return lines, terminated


def _read_head(head: Path) -> tuple[dict | None, str | None]:
    if not head.exists():
        return None, f"{HEAD_FILE} is missing: cannot rule out a truncated log"
    try:
        h = json.loads(head.read_text(encoding="utf-8"))
        count, last = int(h["count"]), str(h["hash"])
    except (ValueError, KeyError, TypeError):
        return None, f"{HEAD_FILE} is not valid (expected JSON with count and hash)"
    return {"count": count, "hash": last}, None


def verify(run_dir: Path | str, head: str | None = None, public_key: str | None = None) -> VerifyResult:
    """Check ``audit.jsonl`` against its chain, ``audit.head``, the checkpoints' heads and the anchors given.

    Detects an edit, deletion, insertion or reordering of any entry (naming
    the first bad line) and a truncation of the tail (the head says more
    entries, or another last hash). A head exactly one entry behind the file
    whose hash is the ``prev`` of the last entry is accepted: that is a crash
    between appending a line and updating the head. ``head``: a hash kept
    elsewhere, which must be an entry of the chain (a rewritten log fails).
    ``public_key``: every entry must be signed with its private key (without it,
    a signed log is checked against the key it names in ``audit.sign``).
    """
    log, head_path = _paths(run_dir)
    if not log.exists():
        return VerifyResult(False, 0, f"no {LOG_FILE} in {log.parent}")
    public = _public_key(log.parent, public_key)
    lines, terminated = _read_lines(log)
    n, problem, last = _check_lines(lines, public)
    if problem is not None:
        return VerifyResult(False, n, problem)
    if not terminated:
        return VerifyResult(False, n - 1, f"line {n} does not end with a newline (a torn write, or an edit)")
    recorded, head_problem = _read_head(head_path)
    if recorded is None:
        return VerifyResult(False, n, head_problem)
    problem = _head_problem(recorded, lines, n, last)
    if problem is None:
        problem, anchors = _anchor_problem(log.parent, lines, head)
    if problem is not None:
        return VerifyResult(False, n, problem)
    return VerifyResult(True, n, None, last, anchors, public is not None)


def _public_key(folder: Path, given: str | None) -> Any:
    from openpfi.monitor.audit_sign import parse_public, read_info

    if given:
        return parse_public(given)
    info = read_info(folder)
    return parse_public(info["public_key"]) if info is not None else None


def _head_problem(head: dict, lines: list[bytes], n: int, last: str) -> str | None:
    if head["count"] > n:
        return f"{HEAD_FILE} records {head['count']} entries but {LOG_FILE} has {n}: the log was truncated"
    if head["count"] == n and head["hash"] != last:
        return f"line {n}: hash differs from the one in {HEAD_FILE} (last entry replaced)"
    if head["count"] < n:
        behind_ok = head["count"] == n - 1 and (
            (n == 1 and head["hash"] == GENESIS) or (n > 1 and json.loads(lines[n - 2])["hash"] == head["hash"])
        )
        if not behind_ok:
            return f"{HEAD_FILE} records {head['count']} entries but {LOG_FILE} has {n}: head does not match"
    return None


def _anchor_problem(folder: Path, lines: list[bytes], head: str | None) -> tuple[str | None, int]:
    """Every checkpoint's ``audit_head`` and the external ``head`` must be entries of the chain."""
    hashes = [json.loads(line)["hash"] for line in lines]
    anchors = 0
    for state in sorted((folder / "checkpoints").glob("round-*/state.json")):
        try:
            recorded = json.loads(state.read_text(encoding="utf-8")).get("audit_head")
        except (OSError, ValueError, AttributeError):
            return f"{state} is unreadable: cannot check the audit head it anchors", anchors
        if recorded is None:
            continue
        count = recorded.get("count") if isinstance(recorded, dict) else None
        if not isinstance(count, int) or not 1 <= count <= len(hashes) or hashes[count - 1] != recorded.get("hash"):
            return (f"{state.parent.name}'s audit head (entry {count}) is not in the chain: the log was rewritten "
                    "after that checkpoint"), anchors
        anchors += 1
    if head is not None and head.strip().lower() not in hashes:
        return f"head {head.strip()[:16]}... is not an entry of the chain: the log was rewritten (or is another run's)", anchors
    return None, anchors


class AuditLog:
    """Appender for ``audit.jsonl`` in a run folder (or at an explicit ``.jsonl`` path).

    An existing log is verified first and the chain continues from its last
    entry; a damaged log raises ``UserError`` and is never appended to.
    Every append is flushed and fsynced, then the head is replaced atomically.
    """

    def __init__(self, path: Path | str) -> None:
        self.path, self.head_path = _paths(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = _signing_key(self.path.parent)
        repaired = _repair_torn_tail(self.path, self.head_path)
        if self.path.exists() and self.path.stat().st_size > 0:
            res = verify(self.path)
            if not res.ok:
                raise UserError(
                    f"audit log {self.path} is damaged ({res.problem}); refusing to append. "
                    f"Run `openpfi audit verify {self.path.parent}` and restore the log"
                )
            self.count, self.last_hash = res.entries, res.head_hash or GENESIS
            self._write_head()  # repairs a head left one entry behind by a crash
        else:
            if self.head_path.exists() and _read_head(self.head_path)[0] != {"count": 0, "hash": GENESIS}:
                raise UserError(
                    f"{self.head_path} exists but {self.path} is empty or missing: the log was deleted; restore it"
                )
            self.count, self.last_hash = 0, GENESIS
        if repaired:
            self.append("action", {"repaired": f"removed a torn last line of {repaired} bytes (a crash mid-append)"})

    def _write_head(self) -> None:
        atomic_write_text(self.head_path, json.dumps({"count": self.count, "hash": self.last_hash}) + "\n")

    def append(self, kind: str, payload: Any) -> str:
        """Append one entry; return its hash. ``payload`` must be JSON-able (see :func:`jsonable`)."""
        if not kind or not isinstance(kind, str):
            raise ValueError("audit entry kind must be a non-empty string")
        entry = {
            "seq": self.count + 1,
            "time": datetime.now(UTC).isoformat(timespec="microseconds"),
            "kind": kind,
            "payload": jsonable(payload),
            "prev": self.last_hash,
        }
        entry["hash"] = entry_hash(entry)
        if self._key is not None:
            from openpfi.monitor.audit_sign import sign

            entry["sig"] = sign(self._key, entry["hash"])
        line = canonical(entry) + b"\n"
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.count += 1
        self.last_hash = entry["hash"]
        self._write_head()
        return entry["hash"]


def _signing_key(folder: Path) -> Any:
    from openpfi.monitor.audit_sign import load_private, read_info

    info = read_info(folder)
    return load_private(info["key_file"]) if info is not None else None


def _repair_torn_tail(log: Path, head_path: Path) -> int:
    """Drop an unterminated last line that ``audit.head`` never counted; return the bytes removed."""
    if not log.is_file():
        return 0
    data = log.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    head, _ = _read_head(head_path)
    keep = data[: data.rfind(b"\n") + 1]
    lines, _ = _read_lines_of(keep)
    n, problem, last = _check_lines(lines)
    if problem is not None or head is None or head["count"] != n or head["hash"] != last:
        return 0  # not a torn append: leave it for verify to report
    with open(log, "r+b") as f:
        f.truncate(len(keep))
        f.flush()
        os.fsync(f.fileno())
    return len(data) - len(keep)


def read_entries(run_dir: Path | str) -> list[dict]:
    """All entries of a log that verifies; ``UserError`` naming the problem otherwise."""
    res = verify(run_dir)
    if not res.ok:
        raise UserError(f"audit log in {run_dir} does not verify: {res.problem}")
    log, _ = _paths(run_dir)
    return [json.loads(line) for line in _read_lines(log)[0]]
