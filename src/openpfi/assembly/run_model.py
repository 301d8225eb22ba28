"""A run's model, rebuilt from its run folder: the global model of a round, or a client's personal model.

    global model, round N     the starting adapter (start/) overlaid with the server's round-N state
                              (checkpoints/round-N/); round 0 is the starting adapter itself
    personal model of client  that global model overlaid with the client's own tensors from the
                              newest personal-round-M/ (M <= N) in its client store: FedSA-LoRA's B,
                              FedRep's personal layers, Ditto's / local's / finetune's whole adapter
                              (as ``evaluate`` scores it: ``personal_loss``)

A client of lower rank r_i sees the global factors cut to its rank (``algorithms.lora_rank.mask_rank``).
Bad input (a round without checkpoint, a client id not in the run, a client that kept nothing yet)
is refused with one line before the model is loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openpfi.algorithms.lora_rank import mask_rank, pad_rank
from openpfi.algorithms.state import StateDict
from openpfi.assembly.clients import load_shared
from openpfi.client.federated import ClientStore, SharedModel
from openpfi.client.personal import POLICIES
from openpfi.config import Config, load_config
from openpfi.errors import UserError
from openpfi.models.adapter_check import check_state
from openpfi.models.merged import is_merged_key
from openpfi.runfolder import RunFolder
from openpfi.runfolder.adapter import read_adapter_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChoice:
    """Which model of a run: checked against the run folder, nothing loaded yet."""

    run: RunFolder
    cfg: Config
    round: int
    client: str | None
    personal: Path | None
    """The client's personal adapter folder (None: the global model)."""
    what: str
    """One line for people: "global model after round 3", "personal model of client c1 ..."."""


def run_clients(run: RunFolder) -> list[str]:
    """Every client id of the run: those its metrics name (sampled) and those with a client store, sorted."""
    ids: set[str] = set()
    for row in run.read_metrics():
        ids.update(str(c) for c in row.get("sampled", []))
    if run.clients_dir.is_dir():
        ids.update(p.name for p in run.clients_dir.iterdir() if p.is_dir())
    return sorted(ids)


def _pick_round(run: RunFolder, round_num: int | None) -> int:
    done = run.completed_rounds()
    if round_num is None:
        if not done and not run.has_start():
            raise UserError(f"{run.path} has no checkpoint yet; `openpfi resume {run.path}` to continue it")
        return done[-1] if done else 0
    if round_num == 0 and run.has_start():
        return 0
    if round_num not in done:
        have = ", ".join(str(r) for r in ([0] if run.has_start() else []) + done) or "none"
        raise UserError(f"round {round_num} has no checkpoint in {run.path} (rounds with one: {have}); pick one of them")
    return round_num


def choose_model(run_dir: Path, round_num: int | None = None, client: str | None = None,
                 store: Path | None = None) -> ModelChoice:
    """Check the run folder, round and client; say what will be loaded. ``store``: the client's own
    store folder where it is not in the run's client store (a Flower node's state dir)."""
    run = RunFolder.open(Path(run_dir))
    cfg = load_config(run.config_file)
    r = _pick_round(run, round_num)
    if client is None:
        return ModelChoice(run, cfg, r, None, None, f"global model after round {r}" if r else "starting model (round 0)")
    ids = run_clients(run)
    if client not in ids and store is None:
        shown = ", ".join(ids[:8]) + (f", ... ({len(ids)} in all)" if len(ids) > 8 else "")
        raise UserError(f"client {client!r} is not in the run {run.path}; its clients are: {shown or 'none yet'}")
    method = cfg.personalization.method
    if not POLICIES[method].personalized:
        log.warning("personalization.method = %r keeps no personal model; client %s uses the global model", method, client)
        return ModelChoice(run, cfg, r, client, None, f"global model after round {r} (method {method}: no personal part)")
    folder = Path(store) if store is not None else run.client_dir(client)
    found = ClientStore(folder).newest(r)
    if found is None:
        raise UserError(f"client {client!r} kept no personal model by round {r} in {folder}; pick a later --round, "
                        "a client that trained by then, or its own store folder (--store)")
    what = f"personal model of client {client} (its round-{found[0]} part, global model of round {r})"
    return ModelChoice(run, cfg, r, client, found[1], what)


def global_state(choice: ModelChoice) -> StateDict:
    """The global model's whole adapter state at the chosen round."""
    _, start = choice.run.start_adapter()
    own = choice.run.load_checkpoint(choice.round).adapter if choice.round else {}
    return {**start, **own}


def model_state(choice: ModelChoice, shared: SharedModel) -> StateDict:
    """The chosen model's state, checked against the loaded model (tensor names and shapes)."""
    state = global_state(choice)
    if choice.personal is not None:
        folder = read_adapter_folder(choice.personal)
        own = folder.own
        rank = int(folder.config.get("r", shared.layout.r))
        if rank < shared.layout.r:  # a lower-rank client: global factors cut to its rank
            state, own = mask_rank(state, rank), pad_rank(own, shared.layout.r)
        state = {**state, **own}
    lora = {k: v for k, v in state.items() if not is_merged_key(k)}
    check_state(lora, shared.params, shared.layout, f"the {choice.what} of {choice.run.path}", zero_b_left_out=True)
    return state


@dataclass
class RunModel:
    choice: ModelChoice
    shared: SharedModel
    state: StateDict
    manifest: dict[str, Any]


def base_config(cfg: Config, dtype: str | None = None) -> Config:
    """``cfg`` without ``model.adapter`` (the run's start/ holds the starting adapter), in ``dtype``."""
    model = cfg.model.model_copy(update={"adapter": "", **({"dtype": dtype} if dtype else {})})
    return cfg.model_copy(update={"model": model})


def load_run_model(run_dir: Path, round_num: int | None = None, client: str | None = None,
                   store: Path | None = None, dtype: str | None = None) -> RunModel:
    """The chosen model loaded into openpfi's own model (base + LoRA + merged deltas); ``dtype``
    overrides the run's compute dtype."""
    choice = choose_model(run_dir, round_num, client, store)
    shared, _ = load_shared(base_config(choice.cfg, dtype))
    state = model_state(choice, shared)
    shared.set_state(state)
    manifest = choice.run.read_json("manifest.json") if (choice.run.path / "manifest.json").is_file() else {}
    return RunModel(choice, shared, state, manifest)
