"""Real Flower runs on loopback: the simulation and deployment runtimes, SecAgg+, TLS, Ctrl-C.

Each run has a hard timeout and must leave no Flower process behind. The in-process
run of the same config is the reference: Flower's aggregated adapter must match it
within ATOL. (Flower's simulation workers run torch with 1 thread and the in-process
engine with 2, so float sums differ in the last bits (~3e-7 measured); SecAgg+ adds
quantization noise below 9e-7 per coordinate here. A client's update is ~4e-3.) Dropouts
and bad nodes are tested against the real ClientApp, without processes, in
test_flower_server.py; the plain insecure deployment path by the acceptance check.
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


def test_deployment_runtime_runs_a_tls_secagg_round_on_two_supernodes(
    reference: RunFolder, workspace: Path, flower_kit: SimpleNamespace, flower_tag: str
) -> None:
    # Prepare: TLS; two SuperNodes with the right CA and one with another CA; the adapter updates
    # are summed under SecAgg+, so the server never sees one
    cfg = flower_kit.tiny_config(workspace, "federation.rounds=1", "flower.secagg=updates")
    out, work = workspace / "deployment", workspace / "deployment-work"
    with flower_kit.hard_timeout(480), deploy.LocalFederation(work, tls=True) as fed:
        fed.start_superlink()
        for i in range(2):
            fed.start_supernode(node_config_text(NodeIdentity(i, 2, str(client_store_dir(out)), "")), threads=1)
        wrong_ca, _ = make_ca(work / "other-ca")
        intruder = fed.start_supernode("partition-id=0 num-partitions=2", name="wrong-ca", root_certificates=wrong_ca)
        (work / "run.toml").write_text(run_config_toml(cfg, out))
        # Execute
        code, lines = fed.run_app(deploy.write_app(work), work / "run.toml", timeout=420)
    # Assert: the wrong CA was refused at the TLS handshake
    assert intruder.popen.returncode not in (None, 0)
    assert "CERTIFICATE_VERIFY_FAILED" in intruder.log.read_text()
    # ... the run folder is the one `openpfi run` writes
    assert code == 0 and (out / "metrics.jsonl").is_file(), "\n".join(lines[-30:])
    assert load_config(out / "config.toml") == cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": str(out)})})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "flower" and manifest["data"]["clients"] == 2
    rows = RunFolder(out).read_metrics()
    assert len(rows) == 1 and rows[0]["failed"] == [] and len(rows[0]["sampled"]) == 2 and "clients" not in rows[0]
    assert sorted(client_figures(client_store_dir(out))) == rows[0]["sampled"]  # the nodes' own figures
    assert verify(out).ok
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
