"""Optional ed25519 signatures on the audit log, with a key the run owner holds.

``openpfi audit keygen KEY`` writes a private key (PKCS#8 PEM, mode 0600) and prints its public
key (hex). A run with ``output.audit_signing_key = KEY`` writes ``audit.sign`` beside its log::

    {"algorithm": "ed25519", "public_key": "<hex>", "key_file": "<absolute path of KEY>"}

(the path, never the key), and every entry then carries ``sig``: the ed25519 signature of the
entry's hash (its 64 hex characters, ASCII). Whoever edits the log cannot sign the edited
entries without the private key; ``openpfi audit verify DIR --public-key HEX`` checks every
entry against a public key kept elsewhere (the one in ``audit.sign`` can be swapped by a forger
too). Needs ``cryptography`` (``pip install openpfi[flower]`` or ``pip install cryptography``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from openpfi.errors import UserError

SIGN_FILE = "audit.sign"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise UserError("audit signing needs the cryptography package: pip install cryptography") from None
    return serialization, ed25519


def generate_key(path: Path) -> str:
    """Write a new ed25519 private key to ``path`` (0600, never overwriting); return the public key hex."""
    serialization, ed25519 = _crypto()
    if path.exists():
        raise UserError(f"{path} exists; choose another file (a key is never overwritten)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_hex(key)


def public_hex(key: Any) -> str:
    serialization, _ = _crypto()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def load_private(path: Path | str) -> Any:
    """The ed25519 private key in ``path``; ``UserError`` naming the problem otherwise."""
    serialization, ed25519 = _crypto()
    p = Path(path).expanduser()
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except FileNotFoundError:
        raise UserError(f"audit signing key {p} not found; make one with `openpfi audit keygen {p}`") from None
    except (ValueError, TypeError, OSError) as err:
        raise UserError(f"{p} is not an unencrypted PEM private key ({type(err).__name__})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UserError(f"{p} is not an ed25519 key; make one with `openpfi audit keygen`")
    return key


def parse_public(text: str) -> Any:
    """A public key from its hex (or a file holding the hex)."""
    _, ed25519 = _crypto()
    value = text.strip()
    p = Path(value).expanduser()
    if len(value) != 64 and p.is_file():
        value = p.read_text(encoding="utf-8").strip()
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
    except ValueError:
        raise UserError("--public-key must be the 64 hex characters `openpfi audit keygen` printed (or a file of them)") from None


def sign(key: Any, entry_hash: str) -> str:
    return key.sign(entry_hash.encode("ascii")).hex()


def signature_ok(public: Any, entry_hash: str, sig: Any) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public.verify(bytes.fromhex(str(sig)), entry_hash.encode("ascii"))
    except (InvalidSignature, ValueError):
        return False
    return True


def enable(log_dir: Path, key_file: str) -> str:
    """Write ``audit.sign`` (before the first entry); return the public key hex."""
    from openpfi.monitor.audit import atomic_write_text

    key = load_private(key_file)
    info = {"algorithm": "ed25519", "public_key": public_hex(key), "key_file": str(Path(key_file).expanduser().resolve())}
    atomic_write_text(log_dir / SIGN_FILE, json.dumps(info, sort_keys=True) + "\n")
    return info["public_key"]


def read_info(log_dir: Path) -> dict[str, str] | None:
    f = log_dir / SIGN_FILE
    if not f.is_file():
        return None
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
        return {"public_key": str(info["public_key"]), "key_file": str(info["key_file"])}
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{f} is not valid (expected JSON with public_key and key_file); restore it") from None
