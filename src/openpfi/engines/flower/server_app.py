"""The openpfi ServerApp: the in-process round loop, with Flower messages instead of calls.

Per run, as ``recipes.federated_sft.start`` does in-process: read the openpfi config
from the run config (``settings.py``), check the monitor's plan, load the base model
(the starting adapter; the monitor's public probes), wait for one SuperNode per client
and ask each which client it is (``query.identify``) -- bad input stops the run here,
before anything is written -- then build the same ``FedServer`` (with the
personalization method's aggregation, ``assembly.personalization.server_setup``), write
the run folder header (``assembly.run_start.new_run``) and attach the monitor's server side
(``assembly.monitoring.server_monitor``). Per round:

1. ``configure_fit`` samples client ids; each sampled node gets ``train.fit`` with the
   global adapter; the server waits ``flower.reply_timeout`` seconds at most;
2. with ``flower.secagg`` on, the answering nodes run SecAgg+ (``secagg.py``);
3. ``screen_fit`` decodes and validates every update that arrived (strategies/screening.py;
   under SecAgg+ only the unmasked sum can be checked), then ``aggregate_fit`` on the valid
   ones (the round goes on when enough remain; the others are listed in ``failed``, with
   the reason in ``dropped`` / ``rejected`` and ``flower.failed_reasons``);
4. nodes that trained get ``evaluate`` with the new global adapter (every
   ``federation.eval_every`` rounds and at the last);
5. ``rounds.round_result`` / ``rounds.close_round``: monitor hook, checkpoint, metrics.jsonl.

The server's scoring of a monitored run's global model is off the critical path: round t's
close (step 5: the monitor's scoring of round t's global model and its tests, the checkpoint,
the metrics row) runs in a background thread while the nodes train round t+1 (the SuperLink
host is idle then), and round t+1 waits for it only after its clients answered, before it
aggregates. The seconds it waited are ``timings.previous_close_wait_s`` of round t+1's row,
and ``timings.previous_round_period_s`` is the time from round t's start to round t+1's (round
t on the critical path). The last round closes at once. A ServerApp that dies while round t+1
trains may leave round t without its checkpoint: ``openpfi resume`` then continues after the
last round whose checkpoint was written. With ``OPENPFI_NODE_SLOTS`` set (``openpfi deploy
local``, where the nodes share the ServerApp's host), a close holds one of the host's compute
slots, as a node worker's fit does (node_worker.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import flwr
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from openpfi.algorithms.state import StateDict
from openpfi.client.messages import ClientUpdate, EvalResult
from openpfi.config import Config
from openpfi.data import groups_are_public
from openpfi.engines.flower import records, secagg
from openpfi.engines.flower.grid import PollingGrid
from openpfi.engines.flower.node_worker import compute_slot, node_slots
from openpfi.engines.flower.nodes import NodeRegistry
from openpfi.engines.flower.resume import resume_point, resume_server
from openpfi.engines.flower.settings import ERROR_PREFIX, RunSettings, check_supported, run_settings
from openpfi.engines.rounds import close_round, round_result
from openpfi.errors import UserError
from openpfi.runfolder import RunFolder
from openpfi.strategies.round_result import EvalSum, MonitorSum

log = logging.getLogger("openpfi.flower")

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    _log_to_flower()
    try:
        settings = run_settings(context.run_config)
        FlowerRun(grid, context, settings).run()
    except (UserError, RuntimeError) as err:
        log.error("%s%s", ERROR_PREFIX, err)
        raise


def _log_to_flower() -> None:
    """Send openpfi's log lines to Flower's logger, so ``flwr run --stream`` shows them."""
    from flwr.supercore.logger import FLOWER_LOGGER

    log.handlers = FLOWER_LOGGER.handlers
    log.setLevel(logging.INFO)
    log.propagate = False


class LogReporter:
    """Round progress as log lines (streamed by ``flwr run --stream``)."""

    def round_start(self, round_num: int, rounds: int, sampled: Sequence[str]) -> None:
        log.info("round %d/%d: %d clients sampled", round_num, rounds, len(sampled))

    def phase(self, name: str) -> None:
        pass

    def round_end(self, row: dict[str, Any]) -> None:
        failed = f", failed: {row['failed']}" if row["failed"] else ""
        log.info(
            "round %d done in %.1f s: train loss %.4f, eval loss %.4f%s",
            row["round"],
            row["timings"]["round_s"],
            row.get("train_loss", float("nan")),
            row.get("eval_loss_mean", float("nan")),
            failed,
        )


class FlowerRun:
    def __init__(self, grid: Grid, context: Context, settings: RunSettings):
        self.grid = PollingGrid(grid)
        self.context = context
        self.settings = settings
        self.cfg: Config = settings.cfg
        self.reporter = LogReporter()
        self.started = time.perf_counter()
        self.startup_s: float | None = None
        self.eval_failed: dict[str, str] = {}
        self.run_key = uuid.uuid4().hex
        """Names this run folder to the nodes (their default state folder); kept by a resume."""
        self.overlap = False
        """Close a round in the background while the next one trains (a monitored run: the scoring)."""
        self._closing: Future[dict[str, Any]] | None = None
        self._closer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openpfi-close-round")
        self._last_start: float | None = None

    @property
    def node_of(self) -> dict[str, int]:
        return self.nodes.node_of

    # -- setup ------------------------------------------------------------------------------------
    def run(self) -> RunFolder:
        from openpfi.assembly.clients import load_shared
        from openpfi.assembly.monitor_plan import plan_monitor
        from openpfi.assembly.personalization import server_setup
        from openpfi.assembly.server import make_server
        from openpfi.assembly.trust import check_trust

        last, resumed = self._resume_point()
        cfg = self.cfg
        check_supported(cfg)
        plan = plan_monitor(cfg)  # bad probe files or an unmeetable privacy budget fail first
        check_trust(cfg, engine="flower")
        shared, start = load_shared(cfg)  # the starting adapter; the model scores the monitor's public probes
        loaded, data, extra = self._data()
        self.nodes = NodeRegistry(self.grid, cfg, self.grid.exchange, self.run_key, [c.client_id for c in data])
        self.nodes.sizes = {c.client_id: len(c.train) for c in data}
        self.nodes.connect()  # bad nodes stop the run before anything is written
        log.info("clients: %s", ", ".join(f"{cid} (node {nid})" for cid, nid in sorted(self.node_of.items())))
        personal = server_setup(cfg, start, sorted(self.node_of), self.nodes.sizes or None)
        self.server = make_server(cfg, personal, engine="flower")
        if cfg.flower.secagg == "updates" and getattr(self.server, "aggregation", None) is not None:
            raise UserError(
                f"flower.secagg = 'updates' sums plain deltas; lora.aggregation = {cfg.lora.aggregation!r} / "
                f"personalization.method = {cfg.personalization.method!r} needs each client's factors. "
                "Use flower.secagg = 'monitor' or 'off'"
            )
        if resumed is None:
            from openpfi.assembly.run_start import new_run

            extra["engine"].update(run_key=self.run_key, launcher=self.settings.launcher)
            self.cfg, self.run_folder = new_run(cfg, self.settings.out, self.settings.force, shared.loaded.info, loaded,
                                                data, extra, start=start, layout=shared.layout)
            self.server.init(personal.server_start(start))
        else:
            self.run_folder = resumed
            resume_server(resumed, self.server, last, personal.server_start(start))
        finish = self._wire_monitor(plan, shared, start, data, last)
        from openpfi.assembly.trust import attach_run

        self.hooks = [*attach_run(self.server, self.run_folder), *self.hooks]
        if plan is None:
            del shared
        self.startup_s = time.perf_counter() - self.started
        self.overlap = plan is not None
        try:
            for r in range(last + 1, cfg.federation.rounds + 1):
                self._round(r)
        except BaseException:
            self._wait_closing(raising=False)  # the round before keeps its checkpoint and row
            raise
        finally:
            self._closer.shutdown(wait=True)
        finish()
        log.info("run folder: %s", self.run_folder.path)
        return self.run_folder

    def _resume_point(self) -> tuple[int, RunFolder | None]:
        """(last complete round, run folder) when the run config asks to resume; (0, None) for a new run."""
        if not self.settings.resume:
            return 0, None
        run, cfg, last, key = resume_point(self.settings.out, self.settings.cfg)
        self.cfg, self.run_key = cfg, key or self.run_key
        log.info("resuming %s after round %d of %d", run.path, last, cfg.federation.rounds)
        return last, run

    def _wire_monitor(self, plan: Any, shared: Any, start: StateDict, data: list[Any], resume_from: int) -> Any:
        """The monitor's server side, as ``assembly.monitoring.wire_monitor`` sets it up in-process."""
        self.hooks: list[Any] = []
        self.validate_monitor: Any = None
        if plan is None:
            return lambda: None

        from openpfi.assembly.monitor_plan import monitor_groups
        from openpfi.assembly.monitoring import server_monitor

        if not data and not self.cfg.monitor.groups and groups_are_public(self.cfg.data.source):
            raise UserError("the SuperLink host has no data to name the monitor's groups; set monitor.groups")
        groups = monitor_groups(self.cfg, [_group(c) for c in data])
        n_expected = min(self.cfg.federation.clients_per_round, self.cfg.data.num_clients)
        monitor, finish = server_monitor(
            plan, self.run_folder, shared, self.server, start, groups, n_expected, resume_from=resume_from
        )
        self.hooks = [monitor]
        if self.cfg.flower.secagg == "off":  # under SecAgg+ no single report reaches the server
            self.validate_monitor = monitor.validate
        return finish

    def _data(self) -> tuple[Any, list[Any], dict[str, Any]]:
        """The clients' data for the manifest (and the client ids) when this host has it."""
        from openpfi.assembly.clients import load_clients
        from openpfi.data import LoadResult

        extra: dict[str, Any] = {"engine": {"name": "flower", "flwr": flwr.__version__, "secagg": self.cfg.flower.secagg}}
        try:
            loaded, data = load_clients(self.cfg)
        except UserError as err:  # the data lives on the SuperNodes only
            loaded, data = LoadResult([]), []
            extra["data"] = {"location": "supernodes", "note": str(err)}
        return loaded, data, extra

    # -- one round --------------------------------------------------------------------------------
    def _round(self, r: int) -> dict[str, Any]:
        cfg, server = self.cfg, self.server
        t0 = time.perf_counter()
        period = None if self._last_start is None else t0 - self._last_start
        self._last_start = t0
        down0, up0 = self.grid.bytes_down, self.grid.bytes_up
        rejoined = self.nodes.refresh(r)  # a restarted SuperNode takes its client back
        sampled = server.configure_fit(r, sorted(self.node_of))
        self.reporter.round_start(r, cfg.federation.rounds, sampled)
        global_state = server.broadcast()
        config = ConfigRecord({"round": r, "run_key": self.run_key, "peers": len(sampled)})  # peers: who shares the DP noise
        msgs = [self._message(_global(global_state, config), self.node_of[c], "train.fit", str(r)) for c in sampled]
        replies = self._send(msgs)
        close_wait = self._wait_closing()  # round r-1's close ran while these clients trained
        errored = {c for c in sampled if (m := replies.get(self.node_of[c])) is not None and m.has_error()}
        updates, layouts, reasons = self._collect(sampled, replies)
        for cid, why in reasons.items():
            log.warning("round %d: client %s did not answer: %s", r, cid, why)
        t_train = time.perf_counter() - t0

        t1 = time.perf_counter()
        updates, rejections = server.screen_fit(r, updates, secure=cfg.flower.secagg == "updates")
        rejected = [x.record() for x in rejections]
        for x in rejected:
            log.warning("round %d: update of client %s rejected (%s): %s", r, x["client_id"], x["reason"], x["detail"])
        sums, secagg_info = self._secure_sum(r, updates, layouts, reasons)
        updates = [u for u in updates if u.client_id not in reasons]
        self.nodes.answered(sampled, [c for c in sampled if c in reasons])
        lost = reasons.keys() | {x["client_id"] for x in rejected}
        failed = [c for c in sampled if c in lost]
        fit_metrics = self._aggregate(r, updates, failed, sums)
        t_agg = time.perf_counter() - t1

        t2 = time.perf_counter()
        self._eval_costs: dict[str, dict[str, float]] = {}
        self.eval_failed = {}
        evals: list[EvalResult] = []
        if r % cfg.federation.eval_every == 0 or r == cfg.federation.rounds:
            evals = self._evaluate(r, [u.client_id for u in updates])
            self.nodes.answered([], sorted(self.eval_failed))
        eval_metrics = server.aggregate_evaluate(r, EvalSum.of(evals))
        t_eval = time.perf_counter() - t2

        result = round_result(r, sampled, failed, fit_metrics, eval_metrics, updates, evals, self.validate_monitor,
                              cfg.privacy.share_client_metrics)
        result.row["dropped"] = [{"client_id": c, "reason": "raised" if c in errored else "no_reply", "detail": why}
                                 for c, why in reasons.items() if c not in {x["client_id"] for x in rejected}]
        result.row["rejected"] = rejected
        if sums is not None and sums.monitor_sum is not None:
            result.monitor = MonitorSum(sums.monitor_sum, sums.clients)
        row = result.row
        probing = sum(u.scalars.get("monitor_seconds", 0.0) for u in updates)  # inside the clients' fit
        row["flower"] = {
            "failed_reasons": reasons,
            "wire_bytes_down": self.grid.bytes_down - down0,
            "wire_bytes_up": self.grid.bytes_up - up0,
            **secagg_info,
            "clients": _costs(updates, self._eval_costs),
            **({"rejoined": rejoined} if rejoined else {}),
            **({"eval_failed_reasons": self.eval_failed} if self.eval_failed else {}),
        }
        if self.startup_s is not None:  # the first round this ServerApp runs: what it took to get here
            row["flower"]["startup"] = {"server_s": self.startup_s, "nodes": self.nodes.startup}
            self.startup_s = None
        timings = {"train_s": t_train, "aggregate_s": t_agg, "evaluate_s": t_eval, "client_monitor_s": probing}
        if close_wait is not None:
            timings["previous_close_wait_s"] = close_wait
        if period is not None:
            timings["previous_round_period_s"] = period
        meta = {"server": server.meta()} if hasattr(server, "meta") else None  # now: round r+1 changes the server

        def close() -> dict[str, Any]:
            with compute_slot(node_slots()):  # deploy local: the scoring takes its turn with the nodes for the cores
                return close_round(self.run_folder, server, result, seed=cfg.seed, hooks=self.hooks,
                                   reporter=self.reporter, timings=timings, started=t0, meta=meta)

        if not self.overlap or r == cfg.federation.rounds:
            return close()
        self._closing = self._closer.submit(close)
        return row

    def _wait_closing(self, raising: bool = True) -> float | None:
        """Wait for the previous round's close (None when there is none); the seconds waited.
        Its error stops the run (``raising``), or is logged when the run stops anyway."""
        pending, self._closing = self._closing, None
        if pending is None:
            return None
        t = time.perf_counter()
        err = pending.exception()
        if err is not None:
            if raising:
                raise err
            log.error("closing the previous round failed too: %s", err)
        return time.perf_counter() - t

    def _collect(
        self, sampled: list[str], replies: dict[int, Message]
    ) -> tuple[list[ClientUpdate], dict[str, secagg.Layout], dict[str, str]]:
        """The round's updates, their SecAgg+ layouts, and why each sampled client sent none."""
        updates: list[ClientUpdate] = []
        layouts: dict[str, secagg.Layout] = {}
        reasons: dict[str, str] = {}
        for cid in sampled:
            reply = replies.get(self.node_of[cid])
            if reply is None or reply.has_error():
                reasons[cid] = self._why(cid, reply)
            else:
                try:
                    updates.append(records.content_to_update(reply.content))
                except UserError as err:  # e.g. a scalar outside client/messages.py UPDATE_SCALARS
                    reasons[cid] = str(err)
                    continue
                except (KeyError, TypeError, ValueError) as err:  # a reply that is not an openpfi update
                    reasons[cid] = f"malformed reply ({type(err).__name__})"
                    continue
                if secagg.LAYOUT in reply.content.config_records:
                    layouts[cid] = secagg.Layout.from_record(reply.content.config_records[secagg.LAYOUT])
        return updates, layouts, reasons

    def _secure_sum(
        self, r: int, updates: list[ClientUpdate], layouts: dict[str, secagg.Layout], reasons: dict[str, str]
    ) -> tuple[secagg.Sums | None, dict[str, Any]]:
        mode = self.cfg.flower.secagg
        if mode == "off":
            return None, {}
        shapes = {layouts[u.client_id] for u in updates if u.client_id in layouts}
        if len(shapes) > 1:
            raise RuntimeError(f"round {r}: clients sent different SecAgg+ layouts {sorted(map(str, shapes))}")
        if not shapes or next(iter(shapes)).empty:
            return None, {"secagg": "nothing to sum (no monitor reports)"}
        if len(updates) < 2:
            if mode == "updates":
                raise RuntimeError(f"round {r}: SecAgg+ needs at least 2 clients, only {len(updates)} answered")
            return None, {"secagg": f"skipped: SecAgg+ needs at least 2 clients, {len(updates)} answered"}
        layout = next(iter(shapes))
        t, down0, up0 = time.perf_counter(), self.grid.bytes_down, self.grid.bytes_up
        nodes = [self.node_of[u.client_id] for u in updates]
        result = secagg.secure_sum(self.grid, self.context, r, nodes, self.cfg)
        seconds = time.perf_counter() - t
        wire = {"secagg_bytes_down": self.grid.bytes_down - down0, "secagg_bytes_up": self.grid.bytes_up - up0}
        if result is None:
            if mode == "updates":
                raise RuntimeError(f"round {r}: SecAgg+ halted (too few nodes stayed for the threshold)")
            return None, {"secagg": "halted", "secagg_s": seconds, **wire}
        mean, active = result
        cid_of = {nid: cid for cid, nid in self.node_of.items()}
        for u in updates:
            if self.node_of[u.client_id] not in active:
                reasons[u.client_id] = "dropped out during SecAgg+"
        sums = secagg.unpack(mean, len(active), layout, self.server.params, self.cfg, self._dp_bound())
        info = {"secagg": mode, "secagg_s": seconds, "secagg_clients": sorted(cid_of[n] for n in active), **wire}
        return sums, info

    def _dp_bound(self) -> float:
        privacy = getattr(self.server, "privacy", None)
        return secagg.dp_bound(privacy.dp) if privacy is not None else 0.0

    def _aggregate(self, r: int, updates: list[ClientUpdate], failed: list[str], sums: secagg.Sums | None) -> dict:
        if sums is not None and sums.mean_delta is not None:
            return self.server.aggregate_fit(r, updates, failures=len(failed), mean_delta=sums.mean_delta)
        return self.server.aggregate_fit(r, updates, failures=len(failed))

    def _why(self, cid: str, reply: Message | None) -> str:
        """Why a client's node gave no answer, naming the node (a SIGKILLed or hung node: no reply)."""
        nid = self.node_of[cid]
        if reply is None:
            return f"SuperNode {nid}: no reply within flower.reply_timeout = {self.cfg.flower.reply_timeout:g} s"
        return f"SuperNode {nid}: {records.reply_error(reply)}"

    def _evaluate(self, r: int, client_ids: list[str]) -> list[EvalResult]:
        config = ConfigRecord({"round": r, "run_key": self.run_key})
        state = self.server.broadcast()
        msgs = [self._message(_global(state, config), self.node_of[c], "evaluate", str(r)) for c in client_ids]
        replies = self._send(msgs)
        evals = []
        for cid in client_ids:
            reply = replies.get(self.node_of[cid])
            if reply is None or reply.has_error():
                self.eval_failed[cid] = self._why(cid, reply)
                log.warning("round %d: client %s did not evaluate: %s", r, cid, self.eval_failed[cid])
                continue
            evals.append(records.content_to_eval(reply.content))
            if "cost" in reply.content.metric_records:
                self._eval_costs[cid] = {k: float(v) for k, v in reply.content.metric_records["cost"].items()}  # type: ignore[arg-type]
        return evals

    # -- messages ---------------------------------------------------------------------------------
    def _message(self, content: RecordDict, node_id: int, message_type: str, group: str) -> Message:
        return Message(content, dst_node_id=node_id, message_type=message_type, group_id=group)

    def _send(self, msgs: list[Message]) -> dict[int, Message]:
        if not msgs:
            return {}
        return self.grid.exchange(msgs, timeout=self.cfg.flower.reply_timeout)


def _group(data: Any) -> str:
    return data.train[0].group if data.train else ""


def _costs(updates: list[ClientUpdate], eval_costs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per client: seconds its fit / evaluate process took to start and to prepare data and model."""
    out: dict[str, dict[str, float]] = {}
    for u in updates:
        c = {f"fit_{k.removeprefix('flower_')}": v for k, v in u.scalars.items() if k.startswith("flower_")}
        c.update({f"evaluate_{k.removeprefix('flower_')}": v for k, v in eval_costs.get(u.client_id, {}).items()})
        out[u.client_id] = c
    return out


def _global(state: StateDict, config: ConfigRecord) -> RecordDict:
    return RecordDict({"global": records.state_to_record(state), "config": config})
