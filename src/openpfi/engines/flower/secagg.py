"""Secure aggregation on Flower: sums of client vectors under SecAgg+ (Bell et al. 2020).

Flower 1.41 ships SecAgg+ as a server workflow, ``flwr.server.workflow.SecAggPlusWorkflow``,
and a ClientApp mod, ``flwr.client.mod.secaggplus_mod``; the workflow runs on a
``flwr.server.compat.LegacyContext`` and asks a (legacy) ``flwr.server.strategy.Strategy``
which nodes take part. This module is the one place openpfi touches that legacy API:
``secure_sum`` hands the workflow a tiny strategy that selects the given nodes and
keeps the unmasked result. The ClientApp registers the mod on its default ``train``
handler, which answers with the vectors ``pack`` stored in the node's context.

One secure sum is four message rounds to every node (setup, share keys, collect masked
vectors, unmask). Each client quantizes its vectors to 2^22 levels on [-1, 1]
(stochastic rounding), adds pairwise and private masks mod 2^32, and the server learns
only the sum over the clients that delivered a masked vector; keys of clients that drop
out later are rebuilt from Shamir shares (``flower.secagg_threshold``). With every
client's weight set to 1 the workflow returns the MEAN over those n clients, times n =
the sum. At most 1024 clients (2^32 / 2^22) fit without overflow.

What is summed (``flower.secagg``):

- ``"monitor"``: the monitor report m_c / ``secagg_monitor_clip`` (by default 1 + 6 standard
  deviations of the client's DP noise share, ``monitor_clip``);
- ``"updates"``: also (w_c / W) delta_c / ``secagg_update_clip`` and w_c / W, with w_c the
  client's example count and W = ``data.max_examples``, so that the server gets the
  weighted mean sum_c w_c delta_c / sum_c w_c and never a single client's delta.

Values beyond the clip are clipped; clients report the clipped share in
``secagg_clipped`` (a training scalar).

With client-level DP of the updates (``privacy.update_clip = C``, distributed noise) each client
has already clipped its delta to ``C`` and added its noise share (client/uplink.py); the sum is
then unweighted, each coordinate scaled by ``dp_bound = C (1 + 6 z)`` (a coordinate of a clipped
update is at most ``C``, its noise share's std at most ``z C``), and the server divides the
unmasked sum by the expected number of clients (strategies/update_privacy.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import Code, FitIns, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from openpfi.config import Config
from openpfi.errors import UserError

if TYPE_CHECKING:  # torch stays out of the SecAgg+ stage processes
    from openpfi.algorithms.state import StateDict
    from openpfi.client.messages import ClientUpdate

PAYLOAD = "openpfi.secagg"
"""Key of the node-local ``context.state`` ArrayRecord holding the vectors for the next secure sum."""
LAYOUT = "secagg_layout"
"""ConfigRecord in the train reply: which parts the node's payload has (never their values)."""


@dataclass(frozen=True)
class Layout:
    keys: tuple[str, ...]
    """Adapter tensors in the payload (sorted); empty unless secagg = "updates"."""
    monitor_dim: int
    monitor_clip: float = 0.0

    @property
    def empty(self) -> bool:
        return not self.keys and self.monitor_dim == 0

    def record(self) -> ConfigRecord:
        return ConfigRecord(
            {"keys": list(self.keys) or [""], "monitor_dim": self.monitor_dim, "monitor_clip": self.monitor_clip}
        )

    @classmethod
    def from_record(cls, record: ConfigRecord) -> Layout:
        keys = tuple(k for k in record["keys"] if k)  # type: ignore[union-attr]
        return cls(keys, int(record["monitor_dim"]), float(record["monitor_clip"]))  # type: ignore[arg-type]


def monitor_clip(cfg: Config, noise_std_sum: float = 0.0, n_expected: int = 1) -> float:
    """``flower.secagg_monitor_clip``, or 1 + 6 sigma_c with sigma_c = noise_std_sum / sqrt(n_expected),
    the std of one client's DP noise share: a coordinate is clipped with probability ~2e-9."""
    if cfg.flower.secagg_monitor_clip > 0:
        return cfg.flower.secagg_monitor_clip
    return 1.0 + 6.0 * noise_std_sum / max(1, n_expected) ** 0.5


def dp_bound(dp: object) -> float:
    """Per-coordinate range of a clipped, noised update under DP: ``C (1 + 6 z)``."""
    return float(dp.clip * (1.0 + 6.0 * dp.noise_multiplier))  # type: ignore[attr-defined]


def pack(update: ClientUpdate, cfg: Config, monitor_bound: float = 1.0,
         update_bound: float = 0.0) -> tuple[list[np.ndarray], Layout, float]:
    """The client's vectors for the secure sum, scaled into [-1, 1]; its layout; the clipped share.

    ``monitor_bound``: ``monitor_clip(...)`` for this run's monitor reports; ``update_bound``: ``dp_bound``
    under DP of the updates (unweighted sum), 0 = the example-weighted sum."""
    f = cfg.flower
    parts: list[np.ndarray] = []
    keys: tuple[str, ...] = ()
    if f.secagg == "updates" and update.delta:
        w = 1.0 if update_bound > 0 else update.num_examples / cfg.data.max_examples
        scale = 1.0 / update_bound if update_bound > 0 else w / f.secagg_update_clip
        keys = tuple(sorted(update.delta))
        parts += [update.delta[k].detach().double().cpu().numpy() * scale for k in keys]
        parts.append(np.array([w], dtype=np.float64))
    dim, clip = 0, 0.0
    if update.monitor is not None:
        dim, clip = len(update.monitor), monitor_bound
        parts.append(update.monitor.values / clip)
    total = sum(p.size for p in parts)
    clipped = sum(int(np.count_nonzero(np.abs(p) > 1.0)) for p in parts)
    return [np.clip(p, -1.0, 1.0) for p in parts], Layout(keys, dim, clip), clipped / total if total else 0.0


@dataclass
class Sums:
    mean_delta: StateDict | None
    monitor_sum: np.ndarray | None
    clients: int


def unpack(mean: Sequence[np.ndarray], clients: int, layout: Layout, like: StateDict, cfg: Config,
           update_bound: float = 0.0) -> Sums:
    """Undo ``pack`` on the workflow's mean over ``clients`` nodes (``update_bound``: as in ``pack``; the
    DP sum is divided by the expected clients per round, federation.clients_per_round)."""
    import torch

    f = cfg.flower
    sums = [np.asarray(a, dtype=np.float64) * clients for a in mean]
    mean_delta = None
    i = 0
    if layout.keys:
        total_w = float(sums[len(layout.keys)][0])
        if total_w <= 0:
            raise RuntimeError("secure aggregation returned a non-positive total weight; the round cannot aggregate")
        factor = update_bound / cfg.federation.clients_per_round if update_bound > 0 else f.secagg_update_clip / total_w
        mean_delta = {
            k: torch.from_numpy(sums[j] * factor).to(like[k].dtype).reshape(like[k].shape)
            for j, k in enumerate(layout.keys)
        }
        i = len(layout.keys) + 1
    monitor = sums[i].reshape(-1) * layout.monitor_clip if layout.monitor_dim else None
    return Sums(mean_delta, monitor, clients)


# -- the ClientApp side --------------------------------------------------------------------------


def store_payload(context: Context, arrays: list[np.ndarray]) -> None:
    context.state[PAYLOAD] = ArrayRecord(arrays)


def payload_reply(message: Message, context: Context) -> Message:
    """What ``secaggplus_mod`` masks: the stored vectors, with weight 1 (so the server gets the mean)."""
    if PAYLOAD not in context.state.array_records:
        raise UserError("secure aggregation asked this node for its vectors before it trained this round")
    arrays = context.state.array_records.pop(PAYLOAD).to_numpy_ndarrays()
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), num_examples=1, metrics={})
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=message)


# -- the ServerApp side --------------------------------------------------------------------------


class _Select(Strategy):
    """The legacy strategy SecAggPlusWorkflow needs: select the given nodes, keep the result."""

    def __init__(self, grid: Grid, run_id: int, node_ids: Sequence[int]):
        self.proxies = [GridClientProxy(nid, grid, run_id) for nid in node_ids]
        self.result: tuple[list[np.ndarray], list[int]] | None = None

    def initialize_parameters(self, client_manager):  # type: ignore[no-untyped-def]
        return None

    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        ins = FitIns(Parameters(tensors=[], tensor_type="numpy.ndarray"), {"round": server_round})
        return [(proxy, ins) for proxy in self.proxies]

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        if results:  # every result carries the same unmasked mean
            self.result = (parameters_to_ndarrays(results[0][1].parameters), [p.node_id for p, _ in results])
        return None, {}

    def configure_evaluate(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        return []

    def aggregate_evaluate(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        return None, {}

    def evaluate(self, server_round, parameters):  # type: ignore[no-untyped-def]
        return None


def secure_sum(
    grid: Grid, context: Context, round_num: int, node_ids: Sequence[int], cfg: Config
) -> tuple[list[np.ndarray], list[int]] | None:
    """Run SecAgg+ over ``node_ids``: the mean of their payloads and the nodes it covers (None if halted)."""
    f = cfg.flower
    scratch = Context(context.run_id, context.node_id, {}, RecordDict(), {})
    strategy = _Select(grid, context.run_id, node_ids)
    legacy = LegacyContext(scratch, strategy=strategy)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: round_num})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    workflow = SecAggPlusWorkflow(
        num_shares=float(f.secagg_shares),
        reconstruction_threshold=float(f.secagg_threshold),
        max_weight=1.0,
        clipping_range=1.0,
        timeout=f.reply_timeout,
    )
    workflow(grid, legacy)
    return strategy.result
