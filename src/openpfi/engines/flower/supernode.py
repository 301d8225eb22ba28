"""``openpfi deploy supernode``: Flower's SuperNode for one client host, with its inputs checked first.

It starts ``flower-supernode`` with the same flags a user would give it, after checking, with
one line naming the node and the fix for each: the partition id against ``num-partitions``,
the private key (authentication), the CA file, that the SuperLink answers at its address
(Flower's SuperNode would retry an unreachable one forever) and that its certificate is
signed by that CA. While Flower's SuperNode runs, its output passes through; if it stops
because the SuperLink turned it away (a key not registered, another CA), the reason is the
last line (``auth.refusal``), exit code 2.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from openpfi.engines.flower.auth import check_private_key, refusal
from openpfi.engines.flower.processes import flower_bin
from openpfi.engines.flower.settings import NodeIdentity, node_config_text
from openpfi.errors import UserError

REACH_TIMEOUT = 10.0


@dataclass(frozen=True)
class SuperNodeArgs:
    superlink: str
    identity: NodeIdentity
    root_certificates: Path | None = None
    """None: insecure (no TLS; loopback trials only)."""
    auth_key: Path | None = None
    port: int = 9094

    @property
    def name(self) -> str:
        return f"SuperNode partition-id {self.identity.partition_id}"

    def command(self) -> list[str]:
        cmd = [flower_bin("flower-supernode"), "--superlink", self.superlink, "--port", str(self.port)]
        cmd += ["--root-certificates", str(self.root_certificates)] if self.root_certificates else ["--insecure"]
        if self.auth_key is not None:
            cmd += ["--auth-supernode-private-key", str(self.auth_key)]
        return [*cmd, "--node-config", node_config_text(self.identity)]


def _split(address: str, node: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"{node}: --superlink {address!r} is not HOST:PORT; pass e.g. superlink.example.org:9093")
    return host.strip("[]"), int(port)


def check(args: SuperNodeArgs) -> None:
    """Every input a SuperNode needs, checked before it starts; a UserError naming the node and the fix."""
    i, node = args.identity, args.name
    if not 0 <= i.partition_id < i.num_partitions:
        raise UserError(f"{node}: --partition-id must be in 0..{i.num_partitions - 1} (--num-partitions {i.num_partitions})")
    if i.data_path and not Path(i.data_path).is_file():
        raise UserError(f"{node}: --data-path {i.data_path} is not a file on this host")
    if args.auth_key is not None:
        check_private_key(args.auth_key, node)
    if args.root_certificates is not None and not args.root_certificates.is_file():
        raise UserError(f"{node}: --root-certificates {args.root_certificates} is not a file; copy the SuperLink's ca.pem here")
    host, port = _split(args.superlink, node)
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT) as sock:
            if args.root_certificates is not None:
                ctx = ssl.create_default_context(cafile=str(args.root_certificates))
                with ctx.wrap_socket(sock, server_hostname=host):
                    pass
    except ssl.SSLCertVerificationError as err:
        raise UserError(
            f"{node}: the SuperLink at {args.superlink} has a certificate {args.root_certificates} does not verify "
            f"({err.verify_message}); pass the CA that signed it, or a certificate naming {host}"
        ) from None
    except (ssl.SSLError, OSError) as err:
        raise UserError(
            f"{node}: the SuperLink at {args.superlink} is not reachable ({getattr(err, 'strerror', None) or err}); "
            "start it first, or fix --superlink (host:port) and the firewall"
        ) from None


def run_supernode(args: SuperNodeArgs) -> int:
    """Check, then run Flower's SuperNode in the foreground; its exit code (a refusal: UserError)."""
    check(args)
    proc = subprocess.Popen(args.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    last: deque[str] = deque(maxlen=200)
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            last.append(line)
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code not in (0, -signal.SIGTERM, 130):
        why = refusal("".join(last), args.name, args.superlink, args.auth_key.with_name(args.auth_key.name + ".pub") if args.auth_key else None)
        if why:
            raise UserError(why)
    return code
