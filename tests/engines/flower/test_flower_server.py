"""The ServerApp's round loop against the real ClientApp, in this process (no Flower processes).

``loopback.Grid`` (conftest.py) hands every message straight to ``client_app.app`` with a per-node
``Context`` (as a SuperNode would), turns a ClientApp exception into an error reply
(as Flower does), and lets a node be "dead" (it never answers). So these tests run the
real identify / fit / evaluate / SecAgg+ code in seconds; test_flower_runtimes.py runs
the same code in Flower's runtimes.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from openpfi.assembly.clients import load_clients, load_shared
from openpfi.client.messages import MonitorReport
from openpfi.client.store import client_figures
from openpfi.config import Config
from openpfi.errors import UserError
from openpfi.recipes import federated_sft


def _untimed_figures(figures: dict[str, dict[int, dict[str, float]]]) -> dict[str, Any]:
    return {c: {r: {k: v for k, v in m.items() if k != "tokens_per_s"} for r, m in rounds.items()}
            for c, rounds in figures.items()}



def test_a_supernode_without_partition_id_is_named_before_anything_is_written(tiny: Config, tmp_path: Path, loopback: SimpleNamespace) -> None:
    # Prepare: node 101 was started without --node-config
    out = tmp_path / "run"
    grid = loopback.Grid({100: {"partition-id": 0, "num-partitions": 2}, 101: {}}, loopback.run_config(tiny, out))
    # Execute / Assert
    with pytest.raises(UserError, match=r"SuperNode 101: this SuperNode's node config has no 'partition-id'"):
        loopback.run(tiny, out, grid).run()
    assert not out.exists()


def test_two_supernodes_with_one_partition_id_are_both_named(tiny: Config, tmp_path: Path, loopback: SimpleNamespace) -> None:
    out = tmp_path / "run"
    nodes = {100: {"partition-id": 1, "num-partitions": 2}, 101: {"partition-id": 1, "num-partitions": 2}}
    with pytest.raises(UserError, match="SuperNodes 100 and 101 both have partition-id 1"):
        loopback.run(tiny, out, loopback.Grid(nodes, loopback.run_config(tiny, out))).run()


def test_missing_supernodes_are_a_clear_error(tiny: Config, tmp_path: Path, loopback: SimpleNamespace) -> None:
    cfg = tiny.model_copy(update={"flower": tiny.flower.model_copy(update={"node_wait": 0.5})})
    out = tmp_path / "run"
    grid = loopback.Grid({100: {"partition-id": 0, "num-partitions": 2}}, loopback.run_config(cfg, out))
    with pytest.raises(UserError, match=r"only 1 of 2 SuperNodes connected within flower.node_wait = 0.5 s \(no SuperNode has partition-id 1\)"):
        loopback.run(cfg, out, grid).run()


def test_loopback_run_equals_the_inprocess_run(tiny: Config, tmp_path: Path, loopback: SimpleNamespace) -> None:
    # Prepare: the same config, in-process and through the ServerApp / ClientApp messages
    reference = federated_sft.start(tiny, tmp_path / "inprocess")
    out = tmp_path / "flower"
    grid = loopback.Grid(loopback.nodes(tmp=tmp_path), loopback.run_config(tiny, out))
    # Execute
    run = loopback.run(tiny, out, grid).run()
    # Assert: same process, same threads: the very same adapters and metrics
    for r in (1, 2):
        a = load_file(str(run.path / "checkpoints" / f"round-{r}" / "adapter_model.safetensors"))
        b = load_file(str(reference.path / "checkpoints" / f"round-{r}" / "adapter_model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in b)
    rows, ref = run.read_metrics(), reference.read_metrics()
    for row, ref_row in zip(rows, ref, strict=True):
        assert row["train_loss"] == ref_row["train_loss"]
        assert row["eval_loss_mean"] == ref_row["eval_loss_mean"]
        assert row["bytes_up"] == ref_row["bytes_up"]
        assert set(row) == set(ref_row) | {"flower"}
    assert grid.seen.count("train.fit") == 4 and grid.seen.count("evaluate") == 4


@pytest.mark.parametrize(
    "sets",
    [
        ["personalization.method=ditto"],  # a personal adapter per client, kept on the node across rounds
        ["lora.aggregation=product", "lora.client_ranks=[4, 8]"],  # heterogeneous ranks, exact product mean
        ["federation.compression=int8", "federation.aggregator=median"],  # residuals in each node's store
    ],
    ids=["ditto", "product-ranks", "int8-median"],
)
def test_personalization_on_flower_equals_in_process(tiny: Config, tmp_path: Path, sets: list[str], loopback: SimpleNamespace) -> None:
    # Prepare
    from openpfi.config import apply_overrides, from_dict

    cfg = from_dict(apply_overrides(tiny.model_dump(mode="json"), sets))
    reference = federated_sft.start(cfg, tmp_path / "inprocess")
    out = tmp_path / "flower"
    # Execute: personal state goes through each node's ClientStore folder between messages
    run = loopback.run(cfg, out, loopback.Grid(loopback.nodes(tmp=tmp_path), loopback.run_config(cfg, out))).run()
    # Assert
    for r in (1, 2):
        a = load_file(str(run.path / "checkpoints" / f"round-{r}" / "adapter_model.safetensors"))
        b = load_file(str(reference.path / "checkpoints" / f"round-{r}" / "adapter_model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)
    rows, ref = run.read_metrics(), reference.read_metrics()
    for row, ref_row in zip(rows, ref, strict=True):
        assert row["bytes_up"] == ref_row["bytes_up"] and row["bytes_down"] == ref_row["bytes_down"]
        assert row["eval_loss_mean"] == ref_row["eval_loss_mean"] and "clients" not in row
    # each node keeps its client's own figures in its state dir, as the in-process client store does
    nodes, own = client_figures(tmp_path / "nodes"), client_figures(reference.clients_dir)
    assert sorted(nodes) == sorted(rows[-1]["sampled"]) and _untimed_figures(nodes) == _untimed_figures(own)
    if cfg.personalization.method == "ditto":
        assert "personal_loss" in nodes[rows[-1]["sampled"][0]][2]  # each client's personal_loss
        assert any((tmp_path / "nodes").rglob("personal-round-2/adapter_model.safetensors"))


def test_each_node_can_bring_its_own_data_file(tiny: Config, tmp_path: Path, loopback: SimpleNamespace) -> None:
    # Prepare: every site has only its rows; the SuperLink host has no data at all
    import json

    rows = [json.loads(line) for line in Path(tiny.data.path).read_text().splitlines()]
    nodes: dict[int, dict[str, Any]] = {}
    for i, site in enumerate(("site0", "site1")):
        path = tmp_path / f"{site}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["client"] == site))
        nodes[100 + i] = {"partition-id": i, "num-partitions": 2, "data-path": str(path), "state-dir": str(tmp_path)}
    cfg = tiny.model_copy(
        update={
            "data": tiny.data.model_copy(update={"path": str(tmp_path / "not-here.jsonl")}),
            "federation": tiny.federation.model_copy(update={"rounds": 1}),
        }
    )
    out = tmp_path / "run"
    # Execute
    run = loopback.run(cfg, out, loopback.Grid(nodes, loopback.run_config(cfg, out))).run()
    # Assert: each node is the client its file names; the manifest says where the data is
    assert sorted(run.read_metrics()[-1]["sampled"]) == sorted(client_figures(tmp_path)) == ["site0", "site1"]
    assert json.loads((out / "manifest.json").read_text())["data"]["location"] == "supernodes"


def test_a_node_that_does_not_answer_is_recorded_and_the_round_goes_on(tiny: Config, tmp_path: Path, loopback: SimpleNamespace) -> None:
    # Prepare: node 101 (partition 1) is dead from round 1 on; one answer is enough
    cfg = tiny.model_copy(
        update={
            "federation": tiny.federation.model_copy(update={"rounds": 1, "min_fit_clients": 1}),
            "flower": tiny.flower.model_copy(update={"reply_timeout": 0.5}),
        }
    )
    out = tmp_path / "run"
    grid = loopback.Grid(loopback.nodes(tmp=tmp_path), loopback.run_config(cfg, out))
    flower_run = loopback.run(cfg, out, grid)
    flower_run.grid.poll = 0.05
    original = flower_run._round

    def kill_then_round(r: int) -> dict[str, Any]:
        grid.dead.add(101)
        return original(r)

    flower_run._round = kill_then_round  # type: ignore[method-assign]
    # Execute
    flower_run.run()
    # Assert
    row = flower_run.run_folder.read_metrics()[0]
    dropped = load_clients(cfg)[1][1].client_id
    assert row["failed"] == [dropped]
    assert row["flower"]["failed_reasons"] == {dropped: "SuperNode 101: no reply within flower.reply_timeout = 0.5 s"}
    assert row["clients_answered"] == 1 and dropped not in client_figures(tmp_path / "nodes")


def test_too_few_answers_stop_the_run_with_the_reason(tiny: Config, tmp_path: Path, loopback: SimpleNamespace) -> None:
    cfg = tiny.model_copy(update={"flower": tiny.flower.model_copy(update={"reply_timeout": 0.3})})
    out = tmp_path / "run"
    grid = loopback.Grid(loopback.nodes(tmp=tmp_path), loopback.run_config(cfg, out))
    flower_run = loopback.run(cfg, out, grid)
    flower_run.grid.poll = 0.05
    original = flower_run._round

    def kill_all(r: int) -> dict[str, Any]:
        grid.dead.update({100, 101})
        return original(r)

    flower_run._round = kill_all  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="only 0 clients answered .2 failed., fewer than federation.min_fit_clients"):
        flower_run.run()


def test_secagg_updates_through_the_clientapp_mod(tiny: Config, tmp_path: Path, loopback: SimpleNamespace) -> None:
    # Prepare: Flower's SecAggPlusWorkflow talks to secaggplus_mod on each node's ClientApp
    cfg = tiny.model_copy(
        update={
            "federation": tiny.federation.model_copy(update={"rounds": 1}),
            "flower": tiny.flower.model_copy(update={"secagg": "updates"}),
        }
    )
    reference = federated_sft.start(cfg, tmp_path / "inprocess")
    out = tmp_path / "flower"
    grid = loopback.Grid(loopback.nodes(tmp=tmp_path), loopback.run_config(cfg, out))
    # Execute
    run = loopback.run(cfg, out, grid).run()
    # Assert: the four SecAgg+ stages ran; no delta crossed in the clear; the aggregate matches
    assert grid.seen.count("train") == 8  # setup, share keys, collect masked vectors, unmask x 2 nodes
    row = run.read_metrics()[0]
    assert row["flower"]["secagg"] == "updates" and len(row["flower"]["secagg_clients"]) == 2
    assert math.isnan(row["update_norm_mean"]) and row["bytes_up"] == 0
    assert row["flower"]["secagg_bytes_up"] > 0
    a = run.load_checkpoint(1).adapter
    b = reference.load_checkpoint(1).adapter
    err = max(float((a[k] - b[k]).abs().max()) for k in b)
    # Stochastic rounding to 2^22 levels of +-clip errs by < 1 level per client, so on the weighted
    # mean by < clip * n * 2^-21 / sum_c(w_c / W) = 0.1 * 2 * 4.8e-7 / (22 / 200) = 8.7e-7 here.
    assert 0 < err < 1.2e-6
    start = load_shared(cfg)[1]
    assert max(float((b[k] - start[k]).abs().max()) for k in b) > 1e-4


def test_secagg_monitor_sums_reports_for_the_hooks(tiny: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loopback: SimpleNamespace) -> None:
    # Prepare: clients that send a fixed monitor vector (the monitor itself is tested elsewhere)
    from openpfi.client.federated import FederatedClient
    from openpfi.engines import rounds

    fit = FederatedClient.fit

    def fit_with_report(self: FederatedClient, *args: Any, **kwargs: Any) -> Any:
        update = fit(self, *args, **kwargs)
        update.monitor = MonitorReport(np.array([1.0, 0.25, -0.5 if self.client_id.endswith('0') else 0.75]))
        return update

    monkeypatch.setattr(FederatedClient, "fit", fit_with_report)
    seen: list[tuple[np.ndarray, int]] = []
    close_round = rounds.close_round

    def spy(run: Any, server: Any, result: Any, **kw: Any) -> Any:
        seen.append((result.monitor.vector, result.monitor.clients))
        return close_round(run, server, result, **kw)

    monkeypatch.setattr("openpfi.engines.flower.server_app.close_round", spy)
    cfg = tiny.model_copy(
        update={
            "federation": tiny.federation.model_copy(update={"rounds": 1}),
            "flower": tiny.flower.model_copy(update={"secagg": "monitor"}),
        }
    )
    out = tmp_path / "flower"
    grid = loopback.Grid(loopback.nodes(tmp=tmp_path), loopback.run_config(cfg, out))
    # Execute
    run = loopback.run(cfg, out, grid).run()
    # Assert: the hooks see the sum; the row on disk does not hold the vector
    (summed, n), = seen
    assert n == 2 and np.allclose(summed, [2.0, 0.5, 0.25], atol=1e-5)
    row = run.read_metrics()[0]
    assert "monitor_sum" not in row
    assert row["update_norm_mean"] > 0  # the deltas themselves travelled in the clear


def test_the_monitor_runs_on_flower_under_secagg_as_in_process(
    tiny: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loopback: SimpleNamespace
) -> None:
    # Prepare: the real monitor (small probe samples), 2 rounds; with SecAgg+ the server gets only the sum
    import threading

    from openpfi.config import load_config
    from openpfi.engines import inprocess, rounds
    from openpfi.engines.flower import server_app
    from openpfi.engines.inprocess import SilentReporter
    from openpfi.monitor.modes import MODES
    from openpfi.recipes.dispatch import start_job

    sums: dict[tuple[str, int], np.ndarray] = {}
    closed_in: dict[int, str] = {}
    for name, module in (("inprocess", inprocess), ("flower", server_app)):

        def spy(run: Any, server: Any, result: Any, _name: str = name, _close: Any = rounds.close_round, **kw: Any) -> Any:
            sums[_name, result.round] = result.monitor.vector
            if _name == "flower":
                closed_in[result.round] = threading.current_thread().name
            return _close(run, server, result, **kw)

        monkeypatch.setattr(module, "close_round", spy)
    cfg = load_config(
        None,
        [
            "model.name=tiny-random", "data.source=jsonl", f'data.path="{tiny.data.path}"', "data.num_clients=2",
            "data.min_examples=4", "federation.clients_per_round=2", "federation.rounds=2", "client.local_steps=1",
            "client.batch_size=2", "client.max_length=48", "client.max_eval_examples=4", "monitor.enabled=true",
            "monitor.utility_examples=2", "monitor.calibration_sims=1000", "monitor.judge_check_prompts=0",
            "monitor.server_items={bbq = 2, crows = 2, harmful = 5, benign = 2, ood = 3, capability = 2}",
            "flower.secagg=monitor",
        ],
    )
    reference = start_job(cfg, tmp_path / "inprocess", False, SilentReporter())
    # Each client's noise is seeded by its secret, kept client-side (in-process: <run>.clients/<id>;
    # Flower: the node's state dir). For the same noise, the nodes get the in-process clients' secrets.
    secrets = sorted(reference.clients_dir.glob("*/monitor-secret.key"))
    assert len(secrets) == 2
    for f in secrets:
        (tmp_path / "nodes" / f.parent.name).mkdir(parents=True)
        shutil.copy(f, tmp_path / "nodes" / f.parent.name / f.name)
    out = tmp_path / "flower"
    # Execute
    run = loopback.run(cfg, out, loopback.Grid(loopback.nodes(tmp=tmp_path), loopback.run_config(cfg, out))).run()
    # Assert: the secrets stayed on the nodes, never in the server's run folder
    assert not list(out.rglob("monitor-secret*"))
    assert sorted(f.read_bytes() for f in (tmp_path / "nodes").glob("*/monitor-secret.key")) == sorted(
        f.read_bytes() for f in secrets
    )
    # ... round 1 closed (the server's scoring, checkpoint, row) in the background while round 2 trained,
    # round 2 (the last) at once
    assert closed_in[1].startswith("openpfi-close-round") and closed_in[2] == threading.main_thread().name
    rows, refs = run.read_metrics(), reference.read_metrics()
    assert [r["round"] for r in rows] == [1, 2] and "previous_close_wait_s" not in rows[0]["timings"]
    assert rows[1]["timings"]["previous_close_wait_s"] >= 0 and rows[1]["timings"]["previous_round_period_s"] > 0
    for r, (row, ref) in enumerate(zip(rows, refs, strict=True), start=1):
        # ... the same sum of the clients' noised reports (SecAgg+: up to its quantization)
        assert sums["flower", r].shape == sums["inprocess", r].shape and sums["flower", r].size > 50
        assert np.abs(sums["flower", r] - sums["inprocess", r]).max() < 1e-3  # 2^22 levels on +-(1 + 6 sigma_client)
        # ... hence the same derived streams (and the global model's, scored in the background), and a report
        assert row["monitor"]["reports"] == ref["monitor"]["reports"] == 2 and row["monitor"]["released"]
        for mode in MODES:
            assert row[mode].keys() == ref[mode].keys()
            for stream, point in ref[mode].items():
                assert row[mode][stream]["value"] == pytest.approx(point["value"], abs=1e-3), (r, mode, stream)
        a = load_file(str(run.path / "checkpoints" / f"round-{r}" / "adapter_model.safetensors"))
        b = load_file(str(reference.path / "checkpoints" / f"round-{r}" / "adapter_model.safetensors"))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in b)
    assert (run.path / "report.json").is_file() and (run.path / "report.html").is_file()


@pytest.mark.parametrize("method", ["none", "local", "finetune", "ditto", "fedrep", "fedsa-lora", "ffa-lora"])
def test_no_serverapp_object_reaches_a_client(
    tiny: Config, tmp_path: Path, method: str, leaks: Any, loopback: SimpleNamespace
) -> None:
    # Prepare: a monitored round of each method through the ServerApp and the nodes' ClientApps
    from openpfi.config import apply_overrides, from_dict

    sets = [f"personalization.method={method}", "federation.rounds=1", "monitor.enabled=true",
            "monitor.utility_examples=2", "monitor.judge_check_prompts=0", "monitor.calibration_sims=1000",
            "monitor.server_items={bbq = 2, crows = 2, harmful = 5, benign = 2, ood = 3, capability = 2}"]
    cfg = from_dict(apply_overrides(tiny.model_dump(mode="json"), sets))
    out = tmp_path / "flower"
    flower_run = loopback.run(cfg, out, loopback.Grid(loopback.nodes(tmp=tmp_path), loopback.run_config(cfg, out)))
    # Execute
    flower_run.run()
    # Assert: what the ServerApp holds (all but the grid, the network to the nodes) reaches nothing of the
    # nodes' clients, their data or their stores; the nodes' objects themselves do
    from openpfi.engines.flower import client_app

    preps = [service.job[1] for service in client_app._LOCAL if service.job is not None]
    clients = [c for prep in preps for c in prep.clients]
    server_side = [v for k, v in vars(flower_run).items() if k != "grid"]
    assert flower_run.hooks and clients
    assert leaks(server_side, clients) == []
    assert leaks(preps, clients)
