"""Real Flower runs on loopback: the simulation and deployment runtimes, SecAgg+, TLS, Ctrl-C.

Each run has a hard timeout and must leave no Flower process behind. The in-process
run of the same config is the reference: Flower's aggregated adapter must match it
within ATOL. (Flower's simulation workers run torch with 1 thread and the in-process
engine with 2, so float sums differ in the last bits (~3e-7 measured); SecAgg+ adds
quantization noise below 9e-7 per coordinate here. A client's update is ~4e-3.) Bad nodes
and dropouts are tested against the real ClientApp, without processes, in
test_flower_server.py and test_flower_faults.py; here real SuperNodes are refused (a key
not registered, another CA), killed, hung and restarted.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from openpfi.client.store import client_figures
from openpfi.config import dump_toml, load_config
from openpfi.engines.flower import deploy
from openpfi.engines.flower.settings import NodeIdentity, node_config_text, run_config_toml
from openpfi.engines.flower.tls import make_ca
from openpfi.errors import UserError
from openpfi.monitor.audit import verify
from openpfi.recipes import federated_sft
from openpfi.runfolder import RunFolder, client_store_dir

ATOL = 1e-5


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flower")


@pytest.fixture(scope="module")
def reference(workspace: Path, flower_kit: SimpleNamespace) -> RunFolder:
    """The in-process run of the tiny config (2 rounds)."""
    return federated_sft.start(flower_kit.tiny_config(workspace), workspace / "inprocess")


def _adapter(run: Path, r: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"round-{r}" / "adapter_model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _no_flower_processes_left(tag: str, kit: SimpleNamespace) -> None:
    deadline = time.monotonic() + 10
    while (left := kit.processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == set(), f"Flower processes left running: {left}"


def test_simulation_runtime_matches_the_inprocess_engine(reference: RunFolder, workspace: Path, flower_kit: SimpleNamespace, flower_tag: str) -> None:
    # Prepare
    cfg = flower_kit.tiny_config(workspace)
    # Execute
    with flower_kit.hard_timeout(480):
        run = deploy.deploy_local(cfg, workspace / "simulation", simulation=True, timeout=420, echo=lambda s: None)
    # Assert: same sampling, same aggregated adapter within ATOL, after both rounds
    rows, ref_rows = run.read_metrics(), reference.read_metrics()
    assert [r["sampled"] for r in rows] == [r["sampled"] for r in ref_rows]
    for r in (1, 2):
        assert _max_diff(_adapter(run.path, r), _adapter(reference.path, r)) < ATOL
    assert _max_diff(_adapter(reference.path, 2), _adapter(reference.path, 1)) > 100 * ATOL  # the test can fail
    assert rows[1]["train_loss"] == pytest.approx(ref_rows[1]["train_loss"], abs=1e-4)
    assert set(rows[1]) - {"flower"} == set(ref_rows[1])  # the same row layout
    _no_flower_processes_left(flower_tag, flower_kit)


def test_deployment_runtime_runs_an_authenticated_tls_secagg_round_on_two_supernodes(
    reference: RunFolder, workspace: Path, flower_kit: SimpleNamespace, flower_tag: str
) -> None:
    # Prepare: TLS and SuperNode authentication; two registered SuperNodes, one whose key is not
    # registered and one with another CA; the adapter updates are summed under SecAgg+
    cfg = flower_kit.tiny_config(workspace, "federation.rounds=1", "flower.secagg=updates")
    out, work = workspace / "deployment", workspace / "deployment-work"
    with flower_kit.hard_timeout(480), deploy.LocalFederation(work, tls=True, auth=True) as fed:
        fed.start_superlink()
        for i in range(2):
            fed.start_supernode(node_config_text(NodeIdentity(i, 2, str(client_store_dir(out)), "")), threads=1)
        stranger = fed.start_supernode("partition-id=0 num-partitions=2", name="stranger", keys=fed.node_keys("stranger", register=False))
        wrong_ca, _ = make_ca(work / "other-ca")
        intruder = fed.start_supernode("partition-id=0 num-partitions=2", name="wrong-ca", root_certificates=wrong_ca)
        (work / "run.toml").write_text(run_config_toml(cfg, out))
        # Execute: the two refused nodes exit, each named with its reason in one line
        for node, why in ((stranger, "the SuperLink does not know its key"), (intruder, "it does not trust the SuperLink")):
            node.popen.wait(timeout=120)
            with pytest.raises(UserError, match=f"SuperNode {node.name} could not join: {why}"):
                fed.check_nodes()
            fed.nodes.pop(node.name)
        code, lines = fed.run_app(deploy.write_app(work), work / "run.toml", timeout=420)
    # Assert: the unregistered key and the wrong CA were refused, each with a line naming it
    assert stranger.popen.returncode not in (None, 0) and intruder.popen.returncode not in (None, 0)
    assert "CERTIFICATE_VERIFY_FAILED" in intruder.log.read_text()
    assert "Failed to activate SuperNode" in stranger.log.read_text()
    # ... the registered ones joined: the run folder is the one `openpfi run` writes
    assert code == 0 and (out / "metrics.jsonl").is_file(), "\n".join(lines[-30:])
    assert load_config(out / "config.toml") == cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": str(out)})})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "flower" and manifest["data"]["clients"] == 2
    rows = RunFolder(out).read_metrics()
    assert len(rows) == 1 and rows[0]["failed"] == [] and len(rows[0]["sampled"]) == 2 and "clients" not in rows[0]
    assert sorted(client_figures(client_store_dir(out))) == rows[0]["sampled"]  # the nodes' own figures
    assert verify(out).ok
    # ... each node's model was loaded once, by its worker, before round 1 (no import or load in the round)
    startup = rows[0]["flower"]["startup"]["nodes"]
    assert len(startup) == 2 and all(c["flower_prepare_s"] > 0 for c in startup.values())
    assert all(c["fit_prepare_s"] < 0.05 and c["fit_import_s"] == 0 for c in rows[0]["flower"]["clients"].values())
    # ... SecAgg+ ran over both clients and gave the in-process aggregate
    flower = rows[0]["flower"]
    assert flower["secagg"] == "updates" and flower["secagg_clients"] == sorted(rows[0]["sampled"])
    assert flower["secagg_s"] > 0 and flower["secagg_bytes_up"] > 0
    assert math.isnan(rows[0]["update_norm_mean"])  # no single update was seen
    assert _max_diff(_adapter(out, 1), _adapter(reference.path, 1)) < ATOL
    _no_flower_processes_left(flower_tag, flower_kit)


def test_ctrl_c_stops_every_process_deploy_started(workspace: Path, flower_kit: SimpleNamespace, flower_tag: str) -> None:
    # Prepare: `openpfi deploy local` in the foreground of its own terminal session
    cfg = flower_kit.tiny_config(workspace)
    (workspace / "ctrl-c.toml").write_text(dump_toml(cfg))
    cmd = [str(Path(sys.executable).parent / "openpfi"), "deploy", "local", str(workspace / "ctrl-c.toml")]
    proc = subprocess.Popen([*cmd, "--out", str(workspace / "ctrl-c")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with flower_kit.hard_timeout(240):
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Successfully started run" in line:  # SuperLink, SuperNodes, ServerApp all up
                break
        time.sleep(3)
        # Execute: Ctrl-C
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    # Assert
    assert proc.returncode == 130, out[-2000:]
    _no_flower_processes_left(flower_tag, flower_kit)


def test_deploy_local_survives_a_killed_a_hung_and_a_restarted_supernode(
    workspace: Path, flower_kit: SimpleNamespace, flower_tag: str
) -> None:
    # Prepare: 3 SuperNodes, 3 rounds; in round 2 node 0 is killed (SIGKILL) and node 1 hangs
    # (SIGSTOP); node 0's host starts a new SuperNode at once, which rejoins for round 3
    (workspace / "faults").mkdir()
    sets = ("federation.rounds=3", "federation.min_fit_clients=1", "flower.reply_timeout=15")
    cfg = flower_kit.tiny_config(workspace / "faults", *sets, clients=3)
    ids = ["site0", "site1", "site2"]
    reference = federated_sft.start(
        cfg, workspace / "faults-inprocess", before_round=[flower_kit.drop_clients({2: {ids[0], ids[1]}, 3: {ids[1]}})]
    )
    out, work = workspace / "faults-run", workspace / "faults-work"
    identity = [node_config_text(NodeIdentity(i, 3, str(client_store_dir(out)), "")) for i in range(3)]
    faults: list[str] = []
    with flower_kit.hard_timeout(420), deploy.LocalFederation(work) as fed:
        fed.start_superlink()
        nodes = [fed.start_supernode(identity[i], name=f"supernode-{i}", threads=1) for i in range(3)]

        def on_line(line: str) -> None:
            if "round 2/3" in line and not faults:
                time.sleep(1.0)  # the fit messages are out: mid-round
                nodes[0].popen.send_signal(signal.SIGKILL)
                nodes[1].popen.send_signal(signal.SIGSTOP)
                fed.start_supernode(identity[0], name="supernode-0-restarted", threads=1)
                faults.append(line)

        (work / "run.toml").write_text(run_config_toml(cfg, out))
        try:
            # Execute
            code, lines = fed.run_app(deploy.write_app(work), work / "run.toml", on_line=on_line, timeout=360)
        finally:
            nodes[1].popen.send_signal(signal.SIGCONT)
    # Assert: the run finished; each failure is named in its round's row
    assert code == 0 and faults, "\n".join(lines[-30:])
    rows = RunFolder(out).read_metrics()
    assert [r["failed"] for r in rows] == [[], ids[:2], [ids[1]]]
    reasons = rows[1]["flower"]["failed_reasons"]
    assert set(reasons) == set(ids[:2]) and all(r.startswith("SuperNode ") for r in reasons.values())
    # ... the restarted node took client 0 back and trained in round 3
    assert list(rows[2]["flower"]["rejoined"]) == [ids[0]] and ids[0] in rows[2]["flower"]["clients"]
    # ... and the adapters are those of an in-process run that drops the same clients in the same rounds
    for r in (1, 2, 3):
        assert _max_diff(_adapter(out, r), _adapter(reference.path, r)) < ATOL
    assert _max_diff(_adapter(out, 3), _adapter(out, 2)) > 100 * ATOL
    _no_flower_processes_left(flower_tag, flower_kit)
