"""A SuperLink and SuperNodes on 127.0.0.1 under one work folder (``openpfi deploy local``).

    SuperLink  flower-superlink --host 127.0.0.1 --port P --disable-runtime-dependency-installation
      `- flower-superexec -> flwr-serverapp (our ServerApp: writes the run folder)
    SuperNode  flower-supernode --superlink 127.0.0.1:P --port Q_i --node-config 'partition-id=i ...'
      `- flower-superexec -> flwr-clientapp (our ClientApp), one process per message
           `- python -m openpfi.engines.flower.node_worker (one per SuperNode: the model, in memory)
    flwr run APP local --stream --run-config run-config.toml

Everything runs with an isolated FLWR_HOME in the work folder, telemetry and the update
check off. With ``auth`` the SuperLink admits only SuperNodes whose public key is registered
(``--enable-supernode-auth``; TLS is required): each SuperNode gets its own key pair
(``auth.py``), registered with ``flwr supernode register`` before it starts.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from openpfi.engines.flower.auth import NodeKeys, make_node_keys, refusal
from openpfi.engines.flower.auth import register as register_key
from openpfi.engines.flower.channel import WORKER_DIR_ENV
from openpfi.engines.flower.node_worker import SLOTS_ENV
from openpfi.engines.flower.processes import (
    HOST,
    Launched,
    ProcessSet,
    check_port,
    flower_bin,
    free_port,
    listening,
    tail,
)
from openpfi.engines.flower.tls import Certificates, make_certificates
from openpfi.errors import UserError

CONNECTION = "openpfi-local"
ROUND_STARTED = re.compile(r"round \d+/\d+: \d+ clients sampled")
"""The ServerApp's log line once every node was identified (server_app.LogReporter)."""


def core_share(threads: int) -> dict[str, str]:
    """The environment of a process that computes with ``threads`` torch threads on this host, taking
    its turn with the others for the cores: ``cores // threads`` compute at once (node_worker.py slots)."""
    return {"OMP_NUM_THREADS": str(threads), SLOTS_ENV: str(max(1, (os.cpu_count() or 1) // threads))}


class LocalFederation:
    """A SuperLink (and SuperNodes) on 127.0.0.1 under ``workdir``; use as a context manager."""

    def __init__(self, workdir: Path, *, tls: bool = False, simulation: bool = False, port: int = 0, auth: bool = False):
        if auth and not tls:
            raise UserError("SuperNode authentication needs TLS (Flower signs node requests only over TLS): add --tls")
        self.workdir = workdir
        self.tls = tls
        self.auth = auth
        self.nodes: dict[str, tuple[Launched, NodeKeys | None]] = {}
        """SuperNodes started, by name, with the key pair each signs with (auth)."""
        self.supervising = True
        """While True, a SuperNode that exits stops ``run_app`` with its reason (a node that cannot join);
        ``run_app`` turns it off once the first round started (from then on a lost node is a fault the run survives)."""
        self.simulation = simulation
        self.port = port
        self.procs = ProcessSet()
        self.logs = workdir / "logs"
        self.home = workdir / "flwr-home"
        self.certs: Certificates | None = None
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "TOKENIZERS_PARALLELISM": "false",
            # SuperExec looks for a new task every second by default (FLWR_SUPEREXEC_TASK_POLL_INTERVAL)
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": os.environ.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2"),
            # the node workers' sockets and logs, removed with the rest (kept with the logs on failure)
            WORKER_DIR_ENV: str(workdir / "w"),
        }

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.procs.stop()

    # -- SuperLink ---------------------------------------------------------------------------------
    def start_superlink(self, timeout: float = 60.0) -> Launched:
        if self.port:
            check_port(self.port)
        port = self.port or free_port()
        cmd = [flower_bin("flower-superlink"), "--host", HOST, "--port", str(port), "--disable-runtime-dependency-installation"]
        if self.simulation:
            cmd.append("--simulation")
        if self.tls:
            self.certs = make_certificates(self.workdir / "certs")
            cmd += ["--ssl-certfile", str(self.certs.cert), "--ssl-keyfile", str(self.certs.key)]
            cmd += ["--ssl-ca-certfile", str(self.certs.ca)]
        else:
            cmd.append("--insecure")
        if self.auth:
            cmd.append("--enable-supernode-auth")
        link = self.procs.start("superlink", cmd, self.env, self.logs / "superlink.log")
        link.port = port
        deadline = time.monotonic() + timeout
        while not listening(port):
            if link.popen.poll() is not None:
                last = tail(link.log)
                if "address already in use" in last.lower() or "errno 98" in last.lower():
                    raise UserError(f"port {port} on {HOST} is already in use; pass another --port (or --port 0)")
                raise UserError(f"the SuperLink exited with code {link.popen.returncode}: {last.splitlines()[-1:]}")
            if time.monotonic() > deadline:
                raise UserError(f"the SuperLink did not listen on {HOST}:{port} within {timeout:g} s; see {link.log}")
            time.sleep(0.2)
        self.link = link
        self._write_connection(port)
        return link

    def _write_connection(self, port: int) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]", f'address = "{HOST}:{port}"']
        if self.certs is not None:
            lines.append(f'root-certificates = "{self.certs.ca}"')
        else:
            lines.append("insecure = true")
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    # -- SuperNodes --------------------------------------------------------------------------------
    def node_keys(self, name: str, register: bool = True) -> NodeKeys:
        """A key pair for SuperNode ``name``, its public key registered with the SuperLink (``register``)."""
        keys = make_node_keys(self.workdir / "keys", name)
        if register:
            register_key(flower_bin("flwr"), keys.public, CONNECTION, self.env)
        return keys

    def start_supernode(
        self,
        node_config: str,
        *,
        name: str = "",
        root_certificates: Path | None = None,
        threads: int = 0,
        keys: NodeKeys | None = None,
    ) -> Launched:
        """A SuperNode; ``root_certificates`` overrides the CA it trusts (tests of a wrong CA); with
        ``auth`` it signs with ``keys`` (default: a new pair, registered). ``threads``: its torch threads;
        the host's SuperNodes then compute ``cores // threads`` at a time (node_worker.py compute slots)."""
        name = name or f"supernode-{len(self.procs.started)}"
        if self.auth and keys is None:
            keys = self.node_keys(name)
        port = free_port()
        cmd = [flower_bin("flower-supernode"), "--superlink", f"{HOST}:{self.link.port}", "--host", HOST, "--port", str(port)]
        ca = root_certificates or (self.certs.ca if self.certs is not None else None)
        cmd += ["--root-certificates", str(ca)] if ca is not None else ["--insecure"]
        if keys is not None:
            cmd += ["--auth-supernode-private-key", str(keys.private)]
        if node_config:
            cmd += ["--node-config", node_config]
        env = dict(self.env)
        if threads:
            env.update(core_share(threads))
        node = self.procs.start(name, cmd, env, self.logs / f"{name}.log")
        node.port = port
        self.nodes[name] = (node, keys)
        return node

    def check_nodes(self) -> None:
        """A UserError naming the first SuperNode that exited, with the reason from its log."""
        for name, (node, keys) in self.nodes.items():
            if node.popen.poll() is None:
                continue
            text = tail(node.log, 200)
            why = refusal(text, f"SuperNode {name}", f"{HOST}:{self.link.port}", keys.public if keys else None)
            last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "no log")
            raise UserError(why or f"SuperNode {name} exited with code {node.popen.returncode}: {last} (log: {node.log})")

    # -- flwr run ----------------------------------------------------------------------------------
    def run_app(
        self,
        app: Path,
        run_config: Path,
        *,
        num_supernodes: int = 0,
        on_line: Callable[[str], None] = lambda line: None,
        timeout: float | None = None,
    ) -> tuple[int, list[str]]:
        """``flwr run APP --stream``: its exit code and output lines (each also given to ``on_line``)."""
        cmd = [flower_bin("flwr"), "run", str(app), CONNECTION, "--stream", "--run-config", str(run_config)]
        if self.simulation:
            cores = os.cpu_count() or 1
            cpus = max(1, cores // max(1, num_supernodes))
            cmd += ["--federation-config", f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus} init-args-num-cpus={cores}"]
        log = self.logs / "flwr-run.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = self.procs.start("flwr-run", cmd, self.env, log, stdout=subprocess.PIPE, text=True, bufsize=1)
        lines: list[str] = []
        q: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert proc.popen.stdout is not None
            for line in proc.popen.stdout:
                q.put(line.rstrip("\n"))
            q.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with open(log, "w") as f:
            while True:
                if self.supervising:
                    self.check_nodes()
                try:
                    line = q.get(timeout=1.0)
                except queue.Empty:
                    self.procs.track()
                    if deadline is not None and time.monotonic() > deadline:
                        raise UserError(f"the Flower run did not finish within {timeout:g} s; logs: {self.logs}") from None
                    continue
                if line is None:
                    break
                lines.append(line)
                f.write(line + "\n")
                on_line(line)
                if ROUND_STARTED.search(line):
                    self.supervising = False
        return proc.popen.wait(), lines
