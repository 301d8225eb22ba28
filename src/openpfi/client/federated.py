"""A federated client: its own data, its own personal state, one shared base model.

The in-process engine keeps ONE base model (``SharedModel``); each client
swaps its adapter weights in, trains, and hands back a ``ClientUpdate`` with
the shared part of its delta. Personal parameters stay in this object and in
its client-side folder (client/store.py), and so do the client's secret (``ClientStore.secret``:
the seed of its monitor noise, which the server must not be able to regenerate) and its own
figures (held-out and training loss, tokens/s: ``ClientStore.record``), which it does not send.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch

from openpfi.algorithms.lora_rank import mask_rank, pad_rank, slice_rank
from openpfi.algorithms.proximal import proximal_term
from openpfi.algorithms.state import StateDict, sub
from openpfi.client.dpo import EncodedPair, ReferenceCache, mixed_batch_loss
from openpfi.client.messages import ClientUpdate, EvalResult
from openpfi.client.personal import KeySplit, PersonalPolicy, Trainer
from openpfi.client.store import ClientStore, new_secret
from openpfi.client.train import BatchLoss, StepCallback, TrainResult, TrainSettings, evaluate_loss, train_local
from openpfi.data.lazy import LazyEncoded
from openpfi.data.tokenize import Encoded
from openpfi.models.loader import LoadedModel, sha256_state
from openpfi.models.lora import adapter_state, attach_lora, copy_into, load_adapter_state, lora_parameters
from openpfi.models.merged import MergedDeltas, is_merged_key, split_merged
from openpfi.runfolder.adapter import AdapterLayout

PERSONAL_TAGS = frozenset({"finetune", "ditto", "head"})
"""The ``Trainer`` tags of the personal training phases (``client/personal.py``)."""


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
        info = loaded.info
        self.layout = AdapterLayout(r, alpha, tuple(targets), dropout, info.folder or info.path, info.name, info.sha256)
        """How this model's adapters are written as peft folders (runfolder/adapter.py)."""
        self.params = lora_parameters(self.model)
        self.initial_state: StateDict = adapter_state(self.model)
        self.pad_id = int(loaded.tokenizer.pad_token_id)
        self.merged = MergedDeltas(self.model)

    def set_state(self, state: StateDict) -> None:
        """Load LoRA factors; dense ``<module>.merged_delta`` entries (models/merged.py) become the
        active merged deltas, and a state without any clears them."""
        lora, merged = split_merged(state)
        copy_into(self.model, lora)
        self.merged.set(merged)

    @contextlib.contextmanager
    def train_only(self, keys: Iterable[str]) -> Iterator[None]:
        """Within the block only the LoRA tensors in ``keys`` require grad (e.g. FFA-LoRA's frozen A)."""
        keep = set(keys)
        try:
            for k, p in self.params.items():
                p.requires_grad_(k in keep)
            yield
        finally:
            for p in self.params.values():
                p.requires_grad_(True)

    def load_external(self, state: StateDict) -> None:
        load_adapter_state(self.model, state)

    def get_state(self) -> StateDict:
        """The LoRA factors as float32 CPU tensors (what travels and rests), whatever the model's device."""
        return {k: p.detach().float().cpu().clone() for k, p in self.params.items()}


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


class FederatedClient:
    """One client. The server never holds a reference to it.

    Its ``policy`` (client/personal.py) decides what it shares, keeps and trains;
    FedAvg when none is given. ``rank`` < ``model_rank`` makes it a lower-rank client:
    it trains the first ``rank`` LoRA components of the shared rank-``model_rank``
    adapter (the others held at zero) and uploads rank-``rank`` factors.
    Its personal state lives in ``self.personal`` and in its ``store`` folder.
    It trains with SFT on its ``Encoded`` examples and DPO on any ``EncodedPair`` among them.
    """

    def __init__(
        self,
        client_id: str,
        train: Sequence[Encoded | EncodedPair],
        heldout: Sequence[Encoded],
        settings: ClientSettings,
        store: ClientStore | None = None,
        group: str = "",
        policy: PersonalPolicy | None = None,
        rank: int | None = None,
        model_rank: int | None = None,
        initial: StateDict | None = None,
    ):
        self.client_id = client_id
        self.train = train if isinstance(train, LazyEncoded) else list(train)
        """Its training examples: a list, or a ``LazyEncoded`` tokenized as read and dropped by ``release``."""
        self.heldout = heldout[: settings.max_eval_examples]
        if not isinstance(self.heldout, LazyEncoded):
            self.heldout = list(self.heldout)
        self.settings = settings
        self.store = store
        self.group = group
        self.policy = policy or PersonalPolicy()
        self.rank = rank
        self.model_rank = model_rank
        self.initial = initial
        """The starting adapter (seeded init or model.adapter); the shared model's init when None."""
        self.personal_train: list[Encoded | EncodedPair] | None = None
        """Data the client's personal training phases (``PERSONAL_TAGS``: fine-tuning, Ditto's personal
        adapter, FedRep's head) use instead of ``train``; None: ``train`` (the silent benchmark's
        personal-model injection sets it)."""
        self.monitor: Any = None
        """A ``client.monitor_client.ClientMonitor`` when the run is monitored: after training, the
        client probes its model and puts ONLY the clipped, noised report in ``ClientUpdate.monitor``."""
        self.retrieval: Any = None
        """A ``client.retrieval_eval.ClientRetrieval`` with ``rag.train`` or ``rag.evaluate``: its own
        documents, indexed in its store; its training examples with their retrieved passages
        (``rag.train``) and its held-out evaluation with them (``rag.evaluate``; figures in its store only)."""
        self.split: KeySplit | None = None
        self.personal: StateDict | None = None
        self._secret: bytes | None = None
        self._eval_memo: tuple[str, float, int] | None = None
        self._last_fit: tuple[int, int] = (0, 0)
        self._ref: ReferenceCache | None = None
        self._released = False

    # -- ranks and state -------------------------------------------------------------------------
    @property
    def _masked(self) -> bool:
        return self.rank is not None and self.model_rank is not None and self.rank < self.model_rank

    def to_client_rank(self, state: StateDict) -> StateDict:
        """The state as this client can hold it: components beyond its rank zeroed (model shapes)."""
        return mask_rank(state, self.rank) if self._masked else state  # type: ignore[arg-type]

    def _setup(self, shared: SharedModel) -> tuple[KeySplit, StateDict]:
        if self.split is None:
            self.split = self.policy.split(shared.params)
        return self.split, self.to_client_rank(self.initial if self.initial is not None else shared.initial_state)

    def restore(self, up_to_round: int) -> None:
        """Reload the personal state saved at or before ``up_to_round`` (openpfi resume)."""
        keeps = not self.policy.derived_personal  # finetune's personal model is rebuilt each time
        state = self.store.load(up_to_round) if self.store is not None and keeps else None
        if state is not None and self._masked:
            state = pad_rank(state, self.model_rank)  # type: ignore[arg-type]
        self.personal = state

    def release(self) -> None:
        """Drop what this client loaded for a round, so that a run holds only its sampled clients'
        state: its tokenized examples (when lazy) and, when its store keeps it, its personal state,
        which its next fit or evaluate reloads from the store (the same values, bit for bit)."""
        for data in (self.train, self.heldout):
            if isinstance(data, LazyEncoded):
                data.release()
        if self.retrieval is not None:
            self.retrieval.release()
        self._eval_memo = None
        if self.store is not None and self.personal is not None:
            self.personal = None
            self._released = True

    def _reload(self, up_to_round: int) -> None:
        if self._released:
            self.restore(up_to_round)
            self._released = False

    def secret(self) -> bytes:
        """The secret seeding this client's monitor noise: from its ``store`` (persisted, so a resumed
        run is bit-identical), or made once in memory for a client without one. Never sent."""
        if self.store is not None:
            return self.store.secret()  # read each time: under Flower the store is set per message
        if self._secret is None:
            self._secret = new_secret()
        return self._secret

    def _keep(self, shared: SharedModel, personal: StateDict, received: StateDict, round_num: int) -> None:
        self.personal = personal
        split, initial = self._setup(shared)
        self._save_personal(shared, personal, self.policy.global_model(split, initial, received), round_num)

    def _save_personal(self, shared: SharedModel, own: StateDict, model: StateDict, round_num: int) -> None:
        """Write the whole personal model (``model`` overlaid with ``own``) into the client's store,
        at this client's rank."""
        if self.store is None:
            return
        layout = shared.layout
        if self._masked:
            own, model = slice_rank(own, self.rank), slice_rank(model, self.rank)  # type: ignore[arg-type]
            layout = layout.at_rank(self.rank)  # type: ignore[arg-type]
        self.store.save(round_num, own, model, layout, self.client_id)

    def _trainer(self, shared: SharedModel, round_num: int, seed: int, on_step: StepCallback | None) -> Trainer:
        def train(
            start: StateDict,
            keys: frozenset[str],
            steps: int,
            tag: str,
            anchor: StateDict | None = None,
            mu: float = 0.0,
        ) -> tuple[StateDict, TrainResult]:
            shared.set_state(start)
            params = {k: shared.params[k] for k in sorted(keys)}
            extra: Any = None
            if mu > 0 and anchor is not None:
                fixed = {k: anchor[k].detach() for k in params}

                def extra() -> torch.Tensor:
                    return proximal_term(params, fixed, mu)

            personal = tag in PERSONAL_TAGS and self.personal_train is not None
            data = self.personal_train if personal else self._training_data(shared)
            n = steps if steps > 0 else self.settings.steps_for(len(data))
            settings = replace(self.settings.train, steps=n)
            parts: tuple[object, ...] = (seed, round_num, self.client_id) + (() if tag == "fit" else (tag,))
            with shared.train_only(keys):
                result = train_local(
                    shared.model, params, data, settings, shared.pad_id, derive_seed(*parts), extra, on_step,
                    self._batch_loss(shared, settings.dpo_beta),
                )
            state = {k: v for k, v in start.items() if is_merged_key(k)}
            state.update(shared.get_state())
            return state, result

        return train

    def _training_data(self, shared: SharedModel) -> Sequence[Encoded | EncodedPair]:
        """Its training examples; with ``rag.train`` each with the passages retrieved for it from its own
        store (client/retrieval_eval.py: retrieved once, tokenized as read, released with the rest)."""
        if self.retrieval is None or not self.retrieval.settings.train:
            return self.train
        folder = self.store.folder if self.store is not None else None
        return self.retrieval.training_set(shared.loaded.tokenizer, folder)

    def _batch_loss(self, shared: SharedModel, beta: float) -> BatchLoss | None:
        """DPO for preference pairs among the training data (SFT alone needs no special loss);
        the reference log-probabilities of the frozen base are cached across rounds."""
        if isinstance(self.train, LazyEncoded) or not any(isinstance(e, EncodedPair) for e in self.train):
            return None
        if self._ref is None:
            self._ref = ReferenceCache(shared.model, shared.pad_id)
        return partial(mixed_batch_loss, shared.model, ref=self._ref, beta=beta, pad_id=shared.pad_id)

    # -- fit and evaluate ------------------------------------------------------------------------
    def fit(
        self,
        shared: SharedModel,
        global_state: StateDict,
        round_num: int,
        seed: int,
        on_step: StepCallback | None = None,
    ) -> ClientUpdate:
        """Train as the policy says; return the delta (trained - start) of the SHARED part only."""
        split, initial = self._setup(shared)
        self._reload(round_num - 1)
        self._last_fit = (round_num, seed)
        received = self.to_client_rank(global_state)
        train = self._trainer(shared, round_num, seed, on_step)
        out = self.policy.fit(train, split, initial, received, self.personal, mu=self.settings.proximal_mu)
        if out.personal is not None:
            self._keep(shared, out.personal, received, round_num)
        delta = sub({k: out.state[k] for k in split.shared}, {k: out.start[k] for k in split.shared})
        if self._masked:
            delta = slice_rank(delta, self.rank)  # type: ignore[arg-type]
        results = out.results
        steps = sum(r.steps for r in results)
        seconds = sum(r.seconds for r in results)
        tokens = sum(r.tokens for r in results)
        scalars = {
            "train_loss": sum(r.mean_loss * r.steps for r in results) / steps if steps else float("nan"),
            "steps": float(steps),
            "tokens": float(tokens),
            "target_tokens": float(sum(r.target_tokens for r in results)),
            "train_seconds": seconds,
            "compute_seconds": sum(r.compute_seconds for r in results),
            "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        }
        self._record(round_num, {"train_loss": scalars["train_loss"], "tokens_per_s": scalars["tokens_per_s"]})
        report = None
        if self.monitor is not None:
            whole = out.personal is not None and split.trainable <= set(out.personal)  # Ditto: a second adapter
            trained = {**out.state, **out.personal} if whole and out.personal is not None else out.state
            own = self.policy.personal_model(train, split, initial, received, self.personal) \
                if self.monitor.personal else None  # the model this client uses itself
            report, scalars["monitor_seconds"] = self.monitor.run(
                shared, seed, round_num, self.client_id, out.start, trained, self.heldout, self.group,
                secret=self.secret(), personal=own,
            )
        return ClientUpdate(self.client_id, len(self.train), delta, scalars, monitor=report)

    def _loss(self, shared: SharedModel, state: StateDict) -> tuple[float, int]:
        key = sha256_state(state)  # the global model of local / FedSA-LoRA often repeats
        if self._eval_memo is not None and self._eval_memo[0] == key:
            return self._eval_memo[1], self._eval_memo[2]
        shared.set_state(state)
        loss, n = evaluate_loss(shared.model, self.heldout, self.settings.eval_batch_size, shared.pad_id)
        self._eval_memo = (key, loss, n)
        return loss, n

    def evaluate(self, shared: SharedModel, global_state: StateDict, round_num: int | None = None) -> EvalResult:
        """Held-out loss on this client's own data of the global model (as the server offers it to
        this client) and, for personalized methods, of the client's own model (``personal_loss``).
        Local fine-tuning before evaluation (finetune) is seeded by the client's last fit.
        ``round_num`` (default: the round of the last fit) files the figures in the client's store."""
        split, initial = self._setup(shared)
        self._reload(self._last_fit[0] if round_num is None else round_num)
        received = self.to_client_rank(global_state)
        loss, n = self._loss(shared, self.policy.global_model(split, initial, received))
        train = self._trainer(shared, *self._last_fit, None)
        own = self.policy.personal_model(train, split, initial, received, self.personal)
        personal_loss = None if own is None else self._loss(shared, own)[0]
        r = self._last_fit[0] if round_num is None else round_num
        if own is not None and self.policy.derived_personal and r > 0:  # finetune: keep the model it scored
            self._save_personal(shared, {k: v for k, v in own.items() if not is_merged_key(k)}, own, r)
        result = EvalResult(self.client_id, len(self.heldout), loss, n, personal_loss)
        figures = own_figures(result)
        if self.retrieval is not None and self.retrieval.settings.evaluate:  # its own model, with / without passages
            model = own if own is not None else self.policy.global_model(split, initial, received)
            folder = self.store.folder if self.store is not None else None
            figures.update(self.retrieval.evaluate(shared, model, folder))
        self._record(r, figures)
        return result

    def _record(self, round_num: int, figures: dict[str, float]) -> None:
        """Keep this client's own figures in its store (the simulation's per-client view)."""
        if self.store is not None:
            self.store.record(round_num, figures)


def own_figures(result: EvalResult) -> dict[str, float]:
    """A client's own held-out figures of an evaluation, as its store keeps them."""
    out = {"eval_loss": result.loss, "eval_ppl": result.perplexity}
    if result.personal_loss is not None:
        out["personal_loss"] = result.personal_loss
    return out

