"""A federated client: its own data, its own personal state, one shared base model.

The in-process engine keeps ONE base model (``SharedModel``); each client
swaps its adapter weights in, trains, and hands back a ``ClientUpdate`` with
the shared part of its delta. Personal parameters stay in this object and in
its client-side folder.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from openpfi.algorithms.proximal import proximal_term
from openpfi.algorithms.state import StateDict, sub
from openpfi.client.messages import ClientUpdate, EvalResult
from openpfi.client.train import StepCallback, TrainSettings, evaluate_loss, train_local
from openpfi.data.tokenize import Encoded
from openpfi.models.loader import LoadedModel
from openpfi.models.lora import adapter_state, attach_lora, copy_into, load_adapter_state, lora_parameters


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (seed, round, client id, ...)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class SharedModel:
    """The one base model of the process, with LoRA layers injected once."""

    def __init__(self, loaded: LoadedModel, r: int, alpha: float, targets: list[str], dropout: float, seed: int):
        self.loaded = loaded
        self.model = loaded.model
        attach_lora(self.model, r, alpha, targets, dropout, seed)
        self.params = lora_parameters(self.model)
        self.initial_state: StateDict = adapter_state(self.model)
        self.pad_id = int(loaded.tokenizer.pad_token_id)

    def set_state(self, state: StateDict) -> None:
        copy_into(self.model, state)

    def load_external(self, state: StateDict) -> None:
        load_adapter_state(self.model, state)

    def get_state(self) -> StateDict:
        return {k: p.detach().clone().float() for k, p in self.params.items()}


@dataclass(frozen=True)
class ClientSettings:
    steps: int
    local_epochs: float
    train: TrainSettings
    eval_batch_size: int
    max_eval_examples: int
    proximal_mu: float = 0.0

    def steps_for(self, num_examples: int) -> int:
        if self.steps > 0:
            return self.steps
        per_step = self.train.batch_size * self.train.grad_accum
        return max(1, math.ceil(self.local_epochs * num_examples / per_step))


class ClientStore:
    """The client-side folder of one client: personal state versioned by round."""

    def __init__(self, folder: Path):
        self.folder = folder

    def save(self, round_num: int, state: StateDict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".personal-round-{round_num}.tmp"
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        tmp.replace(self.folder / f"personal-round-{round_num}.safetensors")
        for old in self.folder.glob("personal-round-*.safetensors"):
            n = int(old.stem.rsplit("-", 1)[1])
            if n < round_num - 1:
                old.unlink()

    def load(self, up_to_round: int) -> StateDict | None:
        """The newest personal state saved at or before ``up_to_round``."""
        best: tuple[int, Path] | None = None
        for f in self.folder.glob("personal-round-*.safetensors"):
            n = int(f.stem.rsplit("-", 1)[1])
            if n <= up_to_round and (best is None or n > best[0]):
                best = (n, f)
        return None if best is None else load_file(str(best[1]))


class FederatedClient:
    """One client. The server never holds a reference to it."""

    def __init__(
        self,
        client_id: str,
        train: Sequence[Encoded],
        heldout: Sequence[Encoded],
        settings: ClientSettings,
        store: ClientStore | None = None,
        group: str = "",
    ):
        self.client_id = client_id
        self.train = list(train)
        self.heldout = list(heldout[: settings.max_eval_examples])
        self.settings = settings
        self.store = store
        self.group = group

    def fit(
        self,
        shared: SharedModel,
        global_state: StateDict,
        round_num: int,
        seed: int,
        on_step: StepCallback | None = None,
    ) -> ClientUpdate:
        """Train from the global adapter; return the delta (client - global) of the shared part."""
        shared.set_state(global_state)
        extra: Any = None
        if self.settings.proximal_mu > 0:
            anchor = {k: v.detach() for k, v in global_state.items()}
            mu = self.settings.proximal_mu

            def extra() -> torch.Tensor:
                return proximal_term(shared.params, anchor, mu)

        settings = self.settings.train
        steps = self.settings.steps_for(len(self.train))
        settings = TrainSettings(**{**settings.__dict__, "steps": steps})
        result = train_local(
            shared.model,
            shared.params,
            self.train,
            settings,
            shared.pad_id,
            derive_seed(seed, round_num, self.client_id),
            extra_loss=extra,
            on_step=on_step,
        )
        delta = sub(shared.get_state(), global_state)
        scalars = {
            "train_loss": result.mean_loss,
            "steps": float(result.steps),
            "tokens": float(result.tokens),
            "target_tokens": float(result.target_tokens),
            "train_seconds": result.seconds,
            "tokens_per_s": result.tokens_per_s,
        }
        return ClientUpdate(self.client_id, len(self.train), delta, scalars)

    def evaluate(self, shared: SharedModel, global_state: StateDict) -> EvalResult:
        """Held-out loss of the global adapter on this client's own data."""
        shared.set_state(global_state)
        loss, n = evaluate_loss(shared.model, self.heldout, self.settings.eval_batch_size, shared.pad_id)
        return EvalResult(self.client_id, len(self.heldout), loss, n)
