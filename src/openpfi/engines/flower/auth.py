"""SuperNode authentication: a key pair per SuperNode, its public key registered with the SuperLink.

Flower 1.41 (``flower-superlink --enable-supernode-auth``, TLS required) admits only
SuperNodes whose public key was added with ``flwr supernode register KEY.pub CONNECTION``;
each SuperNode signs its requests with its private key (``flower-supernode
--auth-supernode-private-key KEY``). Keys are EC on a NIST curve (here P-384) in OpenSSH
format, as ``ssh-keygen -t ecdsa -b 384 -N "" -f KEY`` writes them.

``refusal`` reads a SuperNode's log for the reason the SuperLink turned it away, so a node
with the wrong key, another CA or no way to the SuperLink gets one line that names it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openpfi.errors import UserError


@dataclass(frozen=True)
class NodeKeys:
    private: Path
    """The SuperNode's private key (mode 0600): stays on its host."""
    public: Path
    """``<private>.pub``: registered with the SuperLink."""


def make_node_keys(folder: Path, name: str) -> NodeKeys:
    """A fresh P-384 key pair ``folder/name`` and ``folder/name.pub`` (OpenSSH format)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / name, folder / f"{name}.pub"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    private.touch(mode=0o600)
    private.write_bytes(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
    return NodeKeys(private, public)


def check_private_key(path: Path, node: str) -> None:
    """A clear UserError when ``path`` is not an EC private key Flower can sign with."""
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), None)
    except OSError as err:
        raise UserError(f"{node}: cannot read its private key {path} ({err.strerror}); pass the key file made for it") from None
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserError(
            f"{node}: {path} is not an OpenSSH EC private key; make one with "
            f'`ssh-keygen -t ecdsa -b 384 -N "" -f {path}` and register {path}.pub on the SuperLink'
        )


def register(flwr: str, public_key: Path, connection: str, env: dict[str, str], timeout: float = 60.0) -> None:
    """``flwr supernode register`` against the SuperLink of ``connection``; a UserError with Flower's reason."""
    done = subprocess.run(
        [flwr, "supernode", "register", str(public_key), connection], env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise UserError(f"registering {public_key} with the SuperLink failed: {why[0]}")


REFUSALS = (
    ("Failed to activate SuperNode", "the SuperLink does not know its key: register {pub} on the SuperLink side "
     "(`flwr supernode register {pub} CONNECTION`), or start it with the key that was registered for it"),
    ("All SuperNodes must be registered", "the SuperLink admits registered keys only (--enable-supernode-auth): "
     "give it --auth-supernode-private-key KEY and register KEY.pub with `flwr supernode register`"),
    ("CERTIFICATE_VERIFY_FAILED", "it does not trust the SuperLink's certificate: pass --root-certificates with the "
     "CA that signed it"),
    ("Connection refused", "the SuperLink is not reachable at {address}: start it first, or fix --superlink "
     "(host:port) and the firewall"),
    ("Name or service not known", "the SuperLink address {address} does not resolve: fix --superlink (host:port)"),
)


def refusal(log_text: str, node: str, address: str, public_key: Path | None = None) -> str | None:
    """The one-line reason in a SuperNode's log why it could not join, or None when none is there."""
    pub = str(public_key) if public_key is not None else "its public key"
    for marker, why in REFUSALS:
        if marker in log_text:
            return f"{node} could not join: " + why.format(pub=pub, address=address)
    return None
