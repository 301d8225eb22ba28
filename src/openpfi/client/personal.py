"""Personalization policies: the client side of each ``personalization.method``.

A policy answers four questions over plain state dicts, with training done by
a :class:`Trainer` the client passes in (so every policy is testable with a
fake trainer):

1. ``split``: which adapter tensors are SHARED (uploaded, aggregated),
   PERSONAL (kept by the client across rounds) or FROZEN (never trained);
2. ``fit``: what the client starts from, what it trains, which state it
   uploads (its shared part, as a delta) and which personal state it keeps;
3. ``personal_model``: the client's own model, evaluated on its held-out data
   (``EvalResult.personal_loss``), or None for non-personalized methods;
4. ``federated``: whether anything crosses the network at all.

=========== ========================= ========================================== ==================
method      shared / personal         local training                             personal model
=========== ========================= ========================================== ==================
none        all / -                   from the global adapter                    - (global only)
local       - / all                   own adapter, never uploaded                own adapter
finetune    all / -                   as FedAvg                                  global + k local steps
ditto       all / whole 2nd adapter   global as FedAvg, then the personal one    personal adapter
                                      with ``lambda/2 ||w_p - w_g||^2``
fedrep      pattern-matched personal  jointly (FedPer) or personal part first,   shared + own part
                                      then the shared part (FedRep)
fedsa-lora  A / B                     both factors                               shared A + own B
ffa-lora    B / - (A frozen)          B only, A frozen at its init               - (global only)
=========== ========================= ========================================== ==================

References: Ditto (Li et al. 2021), FedRep (Collins et al. 2021), FedPer
(Arivazhagan et al. 2019), FedSA-LoRA (Guo et al. 2025, "Selective
Aggregation for Low-Rank Adaptation in Federated Learning"), FFA-LoRA (Sun et
al. 2024, "Improving LoRA in Privacy-preserving Federated Learning").

State dicts may carry dense merged deltas (``<module>.merged_delta``, see
``models/merged.py``); they are global, read from the broadcast state, never
trained or uploaded by a client.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from openpfi.algorithms.state import StateDict
from openpfi.client.train import TrainResult
from openpfi.config import PersonalizationConfig
from openpfi.errors import UserError
from openpfi.models.merged import is_merged_key


@dataclass(frozen=True)
class KeySplit:
    """A partition of the adapter keys."""

    shared: frozenset[str]
    """Uploaded as a delta and aggregated by the server."""
    personal: frozenset[str] = frozenset()
    """Trained and kept by the client; never leaves it."""
    frozen: frozenset[str] = frozenset()
    """Never trained (FFA-LoRA's A); read from the initial adapter."""

    @property
    def trainable(self) -> frozenset[str]:
        return self.shared | self.personal


class Trainer(Protocol):
    def __call__(
        self,
        start: StateDict,
        keys: frozenset[str],
        steps: int,
        tag: str,
        anchor: StateDict | None = None,
        mu: float = 0.0,
    ) -> tuple[StateDict, TrainResult]:
        """Load ``start``, train ``keys`` only (others frozen) for ``steps`` steps (0 = the
        client's local steps), with ``mu/2 ||w - anchor||^2`` added when ``mu > 0``; return
        the trained state (same keys as ``start``) and the training figures. ``tag`` names
        the phase in the seed so that each phase draws its own batches."""
        ...


@dataclass
class FitOutcome:
    start: StateDict
    """What the uploaded model started from (the shared delta is ``state - start``)."""
    state: StateDict
    """The trained model whose shared part is uploaded."""
    personal: StateDict | None
    """New personal state to keep (None = keep the previous one)."""
    results: list[TrainResult] = field(default_factory=list)


def _merged(state: Mapping[str, object]) -> list[str]:
    return [k for k in state if is_merged_key(k)]


def compose(split: KeySplit, initial: StateDict, global_state: StateDict, personal: StateDict | None) -> StateDict:
    """Frozen keys from ``initial``, shared keys (and merged deltas) from the global state,
    personal keys from the client's personal state (``initial`` until it has one)."""
    own = personal if personal is not None else initial
    out: StateDict = {}
    for k in split.frozen:
        out[k] = initial[k]
    for k in split.shared:
        out[k] = global_state[k]
    for k in split.personal:
        out[k] = own[k]
    for k in _merged(global_state):
        out[k] = global_state[k]
    return out


class PersonalPolicy:
    """FedAvg (``method = "none"``): everything shared, no personal model."""

    name: ClassVar[str] = "none"
    federated: ClassVar[bool] = True
    """False: nothing is uploaded or downloaded (local-only training)."""
    personalized: ClassVar[bool] = False
    """True: the client has its own model, reported as ``personal_loss``."""
    derived_personal: ClassVar[bool] = False
    """True: the personal model is rebuilt from the global one at each evaluation (finetune), so
    nothing personal carries over between rounds; the client still keeps the last one it scored."""
    refuses_aggregations: ClassVar[tuple[str, ...]] = ()
    """``lora.aggregation`` values this method cannot respect (see ``check_aggregation``)."""
    refusal_reason: ClassVar[str] = ""

    @classmethod
    def check_aggregation(cls, aggregation: str) -> None:
        """UserError when ``lora.aggregation`` would undo what this method keeps apart."""
        if aggregation in cls.refuses_aggregations:
            raise UserError(
                f'personalization.method = "{cls.name}" {cls.refusal_reason.format(agg=aggregation)}; '
                'use lora.aggregation = "naive" or "zeropad"'
            )

    def __init__(self, settings: PersonalizationConfig | None = None):
        self.settings = settings or PersonalizationConfig()

    def split(self, keys: Iterable[str]) -> KeySplit:
        return KeySplit(shared=frozenset(k for k in keys if not is_merged_key(k)))

    def global_model(self, split: KeySplit, initial: StateDict, global_state: StateDict) -> StateDict:
        """The model the server offers (what a new client would start from)."""
        return compose(split, initial, global_state, None)

    def fit(
        self,
        train: Trainer,
        split: KeySplit,
        initial: StateDict,
        global_state: StateDict,
        personal: StateDict | None,
        mu: float = 0.0,
    ) -> FitOutcome:
        """Default: start from the global model (with the own personal part), train every
        trainable key; keep the trained personal keys. ``mu`` > 0 adds FedProx's term."""
        start = compose(split, initial, global_state, personal)
        state, result = train(start, split.trainable, 0, "fit", anchor=start if mu > 0 else None, mu=mu)
        new_personal = {k: state[k] for k in split.personal} if split.personal else None
        return FitOutcome(start, state, new_personal, [result])

    def personal_model(
        self,
        train: Trainer,
        split: KeySplit,
        initial: StateDict,
        global_state: StateDict,
        personal: StateDict | None,
    ) -> StateDict | None:
        """The client's own model after the round, or None (evaluate the global model only)."""
        if not self.personalized:
            return None
        return compose(split, initial, global_state, personal)


class LocalPolicy(PersonalPolicy):
    """Local-only baseline: each client trains its own adapter; nothing is federated."""

    name = "local"
    federated = False
    personalized = True

    def split(self, keys: Iterable[str]) -> KeySplit:
        return KeySplit(shared=frozenset(), personal=frozenset(k for k in keys if not is_merged_key(k)))


class FinetunePolicy(PersonalPolicy):
    """FedAvg, then ``personal_steps`` local fine-tuning steps from the new global model
    before evaluation (the personal model is derived each time, not kept)."""

    name = "finetune"
    personalized = True
    derived_personal = True

    def personal_model(
        self,
        train: Trainer,
        split: KeySplit,
        initial: StateDict,
        global_state: StateDict,
        personal: StateDict | None,
    ) -> StateDict | None:
        start = compose(split, initial, global_state, None)
        state, _ = train(start, split.trainable, self.settings.personal_steps, "finetune")
        return state


class DittoPolicy(PersonalPolicy):
    """Ditto (Li et al. 2021, Algorithm 1): the global adapter trains as in FedAvg; the
    personal adapter ``w_p`` (a second, whole adapter kept by the client) takes
    ``personal_steps`` steps on ``f_k(w_p) + lambda/2 ||w_p - w_g||^2`` with ``w_g`` the
    global adapter received this round. ``lambda = personalization.ditto_lambda``."""

    name = "ditto"
    personalized = True
    refuses_aggregations = ("product", "stack")
    refusal_reason = ('pulls the personal LoRA factors towards the global ones, which lora.aggregation = "{agg}" '
                      're-factors or merges away')

    def fit(
        self,
        train: Trainer,
        split: KeySplit,
        initial: StateDict,
        global_state: StateDict,
        personal: StateDict | None,
        mu: float = 0.0,
    ) -> FitOutcome:
        out = super().fit(train, split, initial, global_state, None, mu)
        anchor = compose(split, initial, global_state, None)
        own = dict(personal) if personal is not None else dict(anchor)
        for k in _merged(anchor):
            own[k] = anchor[k]
        lam = self.settings.ditto_lambda
        state, result = train(own, split.trainable, self.settings.personal_steps, "ditto", anchor=anchor, mu=lam)
        out.personal = {k: v for k, v in state.items() if not is_merged_key(k)}
        out.results.append(result)
        return out

    def personal_model(
        self,
        train: Trainer,
        split: KeySplit,
        initial: StateDict,
        global_state: StateDict,
        personal: StateDict | None,
    ) -> StateDict | None:
        own = dict(personal) if personal is not None else compose(split, initial, global_state, None)
        for k in _merged(global_state):
            own[k] = global_state[k]
        return own


def match_patterns(keys: Iterable[str], patterns: Sequence[str]) -> frozenset[str]:
    """Keys that any regex in ``patterns`` matches (``re.search``)."""
    compiled = [re.compile(p) for p in patterns]
    return frozenset(k for k in keys if any(c.search(k) for c in compiled))


class FedRepPolicy(PersonalPolicy):
    """FedPer / FedRep split: adapter tensors whose name matches a regex of
    ``personalization.personal_patterns`` stay personal, the rest is shared.

    ``head_steps = 0``: FedPer, both parts train jointly for the local steps.
    ``head_steps > 0``: FedRep, first ``head_steps`` steps on the personal part
    (shared part frozen), then the local steps on the shared part (personal frozen).
    """

    name = "fedrep"
    personalized = True

    def split(self, keys: Iterable[str]) -> KeySplit:
        keys = [k for k in keys if not is_merged_key(k)]
        personal = match_patterns(keys, self.settings.personal_patterns)
        return KeySplit(shared=frozenset(keys) - personal, personal=personal)

    def fit(
        self,
        train: Trainer,
        split: KeySplit,
        initial: StateDict,
        global_state: StateDict,
        personal: StateDict | None,
        mu: float = 0.0,
    ) -> FitOutcome:
        if self.settings.head_steps <= 0:
            return super().fit(train, split, initial, global_state, personal, mu)
        start = compose(split, initial, global_state, personal)
        head, r1 = train(start, split.personal, self.settings.head_steps, "head")
        state, r2 = train(head, split.shared, 0, "body", anchor=head if mu > 0 else None, mu=mu)
        # The uploaded delta is measured from the global shared part, which the head phase left untouched.
        return FitOutcome(start, state, {k: state[k] for k in split.personal}, [r1, r2])


class FedSALoraPolicy(PersonalPolicy):
    """FedSA-LoRA: A matrices shared (they learn general knowledge), B matrices personal."""

    name = "fedsa-lora"
    personalized = True
    refuses_aggregations = ("product", "stack")
    refusal_reason = 'shares only A, which lora.aggregation = "{agg}" cannot respect (exact for a common A: naive)'

    def split(self, keys: Iterable[str]) -> KeySplit:
        keys = [k for k in keys if not is_merged_key(k)]
        b = frozenset(k for k in keys if k.endswith(".lora_B.weight"))
        return KeySplit(shared=frozenset(keys) - b, personal=b)


class FFALoraPolicy(PersonalPolicy):
    """FFA-LoRA: A frozen at its (seeded, shared) initial value, only B trained and shared.
    With a common A, averaging B is the exact average update: mean(B_i) A = mean(B_i A)."""

    name = "ffa-lora"
    refuses_aggregations = ("product", "stack")
    refusal_reason = 'freezes A, which lora.aggregation = "{agg}" cannot respect (exact for a common A: naive)'

    def split(self, keys: Iterable[str]) -> KeySplit:
        keys = [k for k in keys if not is_merged_key(k)]
        a = frozenset(k for k in keys if k.endswith(".lora_A.weight"))
        return KeySplit(shared=frozenset(keys) - a, frozen=a)


POLICIES: dict[str, type[PersonalPolicy]] = {
    p.name: p
    for p in (PersonalPolicy, LocalPolicy, FinetunePolicy, DittoPolicy, FedRepPolicy, FedSALoraPolicy, FFALoraPolicy)
}
"""The one mapping from ``personalization.method`` to its policy."""


def policy_class(method: str) -> type[PersonalPolicy]:
    try:
        return POLICIES[method]
    except KeyError:
        raise UserError(f"personalization.method {method!r} is unknown; choose one of {', '.join(POLICIES)}") from None


def make_policy(method: str, settings: PersonalizationConfig | None = None) -> PersonalPolicy:
    return policy_class(method)(settings)


def check_split(policy: PersonalPolicy, keys: Sequence[str]) -> KeySplit:
    """The policy's split of the model's adapter keys; bad patterns refused with one line."""
    if isinstance(policy, FedRepPolicy):
        for p in policy.settings.personal_patterns:
            if not match_patterns(keys, [p]):
                raise UserError(
                    f"personalization.personal_patterns: {p!r} matches no LoRA parameter; "
                    f"names look like {sorted(keys)[0]!r}"
                )
    split = policy.split(keys)
    if policy.federated and not split.shared:
        raise UserError(
            f"personalization.method = {policy.name!r} leaves no parameter shared; "
            'narrow personalization.personal_patterns or use method = "local"'
        )
    return split
