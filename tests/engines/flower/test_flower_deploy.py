"""`openpfi deploy local` pieces that need no Flower run: ports, certificates, process cleanup."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from openpfi.config import Config
from openpfi.engines.flower import deploy
from openpfi.engines.flower.tls import make_ca, make_certificates
from openpfi.errors import UserError


def test_a_port_already_in_use_gets_a_clear_message() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is already in use"):
            deploy.check_port(port)


def test_deploy_local_refuses_before_starting_anything(tiny: Config, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--nodes 3 but data.num_clients = 2"):
        deploy.deploy_local(tiny, tmp_path / "run", nodes=3)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        deploy.deploy_local(tiny, tmp_path / "full")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(UserError, match="already in use"):
            deploy.deploy_local(tiny, tmp_path / "run", port=s.getsockname()[1])


def test_process_set_stops_children_and_grandchildren_by_pid(tmp_path: Path) -> None:
    # Prepare: a parent in its own session whose child starts a grandchild in ANOTHER session
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        "time.sleep(60)\n"
    )
    procs = deploy.ProcessSet()
    procs.start("parent", [sys.executable, "-c", script], dict(os.environ), tmp_path / "p.log")
    deadline = time.monotonic() + 20
    while len(procs.seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        procs.track()
    pids = set(procs.seen)
    assert len(pids) == 2
    # Execute
    procs.stop(grace=2)
    # Assert
    assert procs.alive() == []
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


def test_sigterm_becomes_keyboardinterrupt_so_cleanup_runs() -> None:
    with pytest.raises(KeyboardInterrupt), deploy.stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_certificates_verify_against_their_ca_only(tmp_path: Path) -> None:
    # Prepare
    certs = make_certificates(tmp_path / "good")
    other_ca, _ = make_ca(tmp_path / "other")
    server = x509.load_pem_x509_certificate(certs.cert.read_bytes())
    # Assert: the SAN names the loopback address, the server cert is signed by its CA
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(certs.ca.read_bytes()))
    with pytest.raises((ValueError, InvalidSignature)):  # same issuer name, other key
        server.verify_directly_issued_by(x509.load_pem_x509_certificate(other_ca.read_bytes()))
    # ... and Python's TLS stack accepts the pair
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certs.cert, certs.key)


def test_the_generated_app_names_our_serverapp_and_clientapp(tmp_path: Path) -> None:
    from flwr.cli.config_utils import load_and_validate

    app = deploy.write_app(tmp_path)
    config, _ = load_and_validate(app / "pyproject.toml")  # also imports the components
    components = config["tool"]["flwr"]["app"]["components"]
    assert components == {
        "serverapp": "openpfi.engines.flower.server_app:app",
        "clientapp": "openpfi.engines.flower.client_app:app",
    }


def _supernode(tmp_path: Path, superlink: str, pid: int = 0, ca: Path | None = None, key: Path | None = None) -> object:
    from openpfi.engines.flower.settings import NodeIdentity
    from openpfi.engines.flower.supernode import SuperNodeArgs

    return SuperNodeArgs(superlink, NodeIdentity(pid, 2, "", ""), ca, key)


def test_a_supernodes_bad_inputs_are_named_before_it_starts(tmp_path: Path) -> None:
    from openpfi.engines.flower.auth import make_node_keys
    from openpfi.engines.flower.supernode import check

    # Prepare: a closed port, a TLS listener whose certificate another CA signed, a key that is not one
    closed = deploy.free_port()
    certs, (other_ca, _) = make_certificates(tmp_path / "link"), make_ca(tmp_path / "other")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certs.cert, certs.key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with contextlib.suppress(ssl.SSLError, OSError), server.wrap_socket(conn, server_side=True):
                pass

    threading.Thread(target=serve, daemon=True).start()
    (tmp_path / "not-a-key").write_text("hello")
    good = make_node_keys(tmp_path / "keys", "site0")
    # Execute / Assert: one line each, naming the node and the fix
    with pytest.raises(UserError, match=r"SuperNode partition-id 5: --partition-id must be in 0..1"):
        check(_supernode(tmp_path, f"127.0.0.1:{closed}", pid=5))  # type: ignore[arg-type]
    with pytest.raises(UserError, match=r"SuperNode partition-id 0: the SuperLink at 127.0.0.1:\d+ is not reachable .*start it first"):
        check(_supernode(tmp_path, f"127.0.0.1:{closed}"))  # type: ignore[arg-type]
    with pytest.raises(UserError, match="is not an OpenSSH EC private key; make one with `ssh-keygen"):
        check(_supernode(tmp_path, f"127.0.0.1:{port}", key=tmp_path / "not-a-key"))  # type: ignore[arg-type]
    with pytest.raises(UserError, match="has a certificate .* does not verify .*pass the CA that signed it"):
        check(_supernode(tmp_path, f"127.0.0.1:{port}", ca=other_ca, key=good.private))  # type: ignore[arg-type]
    check(_supernode(tmp_path, f"127.0.0.1:{port}", ca=certs.ca, key=good.private))  # type: ignore[arg-type]
    listener.close()


def test_resume_of_a_flower_run_says_how_when_it_cannot_start_one(tmp_path: Path) -> None:
    # Prepare: a run folder written by `flwr run` on a deployment (no deploy local launcher)
    import json

    from openpfi.config import dump_toml, load_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(dump_toml(load_config(None, [])))
    (run / "manifest.json").write_text(json.dumps({"engine": {"name": "flower", "launcher": ""}}))
    (tmp_path / "inproc").mkdir()
    (tmp_path / "inproc" / "manifest.json").write_text(json.dumps({"engine": {"name": "inprocess"}}))
    # Execute / Assert
    assert deploy.flower_launcher(tmp_path / "inproc") is None and deploy.flower_launcher(run) == {}
    with pytest.raises(UserError, match=r"ran on a Flower deployment: .* `openpfi resume .* --connection NAME`"):
        deploy.flwr_resume(run)
