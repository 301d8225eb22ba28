"""Client side of federated alignment: SFT, DPO and multi-objective local training.

Every method runs ``local_steps`` optimizer steps (AdamW on the LoRA parameters, the
same optimizer, schedule and clipping as SFT) and sees the same number of pairs per
step: ``batch_size`` pairs per objective for the multi-objective methods, and
``batch_size * M`` pairs from the union for SFT and DPO. Per objective m the loss is
DPO on that objective's pairs, L_m.

- ``sft``: NLL of the chosen answers of the union.
- ``dpo``: DPO on the union of all pairs (Rafailov et al. 2023).
- ``scalarized``: linear scalarization, loss ``sum_m p_m L_m`` with the fixed preference p.
- ``firm``: FIRM ("Federated In-client Regularized Multi-objective Alignment for Large
  Language Models", arXiv 2511.16992), as DESIGN.md states it: at every local step the
  per-objective gradients g_m = grad L_m on the trainable LoRA parameters give the weights

      lambda = argmin_{lambda in simplex} 1/2 ||sum_m lambda_m g_m||^2 + beta/2 ||lambda - p||^2

  (``algorithms.mgda.regularized_simplex_weights``; beta = 0 is MGDA's min-norm point,
  beta -> inf is scalarization with p), and the step goes along ``sum_m lambda_m g_m``
  (handed to the client optimizer as the gradient). The client uploads ONE adapter delta.
- ``fmgda``: FMGDA (Yang et al. 2023, "Federated Multi-Objective Learning"): for each
  objective m the client trains ``local_steps`` steps on L_m alone from the global
  adapter and uploads the M deltas (``ClientUpdate.extra``); the server solves MGDA over
  their averages (``strategies.align_server``). Same forward/backward count as FIRM.

A client without pairs for an objective trains on the others (the preference restricted
to them and renormalised, uniform if that leaves nothing) and reports ``missing_<m> = 1``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from openpfi.algorithms.mgda import gram_matrix, regularized_simplex_weights
from openpfi.algorithms.proximal import proximal_term
from openpfi.algorithms.state import StateDict, sub
from openpfi.client.dpo import EncodedPair, ReferenceCache, dpo_batch, sft_batch
from openpfi.client.federated import ClientSettings, ClientStore, FederatedClient, SharedModel, derive_seed
from openpfi.client.messages import ClientUpdate, EvalResult
from openpfi.client.train import StepCallback, TrainSettings, lr_factor

METHODS = ("sft", "dpo", "firm", "scalarized", "fmgda")


@dataclass(frozen=True)
class AlignSettings:
    method: str
    objectives: tuple[str, ...]
    preference: tuple[float, ...]
    beta: float
    """FIRM regularization."""
    dpo_beta: float


def restricted_preference(preference: Sequence[float], available: Sequence[bool]) -> np.ndarray:
    """p restricted to the available objectives and renormalised; uniform on them if p is 0 there."""
    p = np.array([w if ok else 0.0 for w, ok in zip(preference, available, strict=True)], dtype=np.float64)
    if p.sum() <= 0:
        p = np.array([1.0 if ok else 0.0 for ok in available])
    return p / p.sum()


def firm_weights(grads: Sequence[Sequence[torch.Tensor]], preference: np.ndarray, beta: float) -> np.ndarray:
    """FIRM's lambda from per-objective gradients (each a list of per-parameter tensors)."""
    flat = [torch.cat([g.reshape(-1) for g in gs]) for gs in grads]
    return regularized_simplex_weights(gram_matrix(flat), preference, beta)


def _cosines(grads: Sequence[Sequence[torch.Tensor]]) -> float:
    flat = [torch.cat([g.reshape(-1) for g in gs]).double() for gs in grads]
    vals = []
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            den = float(flat[i].norm() * flat[j].norm())
            if den > 0:
                vals.append(float(flat[i] @ flat[j]) / den)
    return float(np.mean(vals)) if vals else float("nan")


class _Sampler:
    """Seeded reshuffled passes over one list of pairs."""

    def __init__(self, items: Sequence[EncodedPair], seed: int):
        self.items = list(items)
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def take(self, n: int) -> list[EncodedPair]:
        while len(self.order) < n:
            self.order += torch.randperm(len(self.items), generator=self.gen).tolist()
        idx, self.order = self.order[:n], self.order[n:]
        return [self.items[i] for i in idx]


StepFn = Callable[[int], tuple[float, int]]
"""step(i) -> (loss value, tokens); sets .grad of the trainable parameters."""


def optimize(params: dict[str, torch.nn.Parameter], settings: TrainSettings, step_fn: StepFn,
             on_step: StepCallback | None = None) -> tuple[list[float], int, float]:
    """AdamW over ``settings.steps`` steps of ``step_fn``; returns (losses, tokens, seconds)."""
    trainable = list(params.values())
    opt = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    losses: list[float] = []
    tokens = 0
    start = time.perf_counter()
    for step in range(settings.steps):
        for group in opt.param_groups:
            group["lr"] = settings.lr * lr_factor(step, settings.steps, settings.schedule, settings.warmup_steps)
        loss, n = step_fn(step)
        tokens += n
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss)
        if on_step is not None:
            elapsed = time.perf_counter() - start
            on_step(step + 1, settings.steps, loss, tokens / elapsed if elapsed > 0 else 0.0)
    return losses, tokens, time.perf_counter() - start


class AlignClient(FederatedClient):
    """A client holding private preference pairs per objective."""

    def __init__(
        self,
        client_id: str,
        pairs: dict[str, list[EncodedPair]],
        heldout: Sequence[EncodedPair],
        settings: ClientSettings,
        align: AlignSettings,
        ref: ReferenceCache,
        store: ClientStore | None = None,
        group: str = "",
    ):
        union = [p for m in align.objectives for p in pairs.get(m, [])]
        super().__init__(client_id, [p.chosen for p in union], [], settings, store, group)
        self.pairs = {m: list(pairs.get(m, [])) for m in align.objectives}
        self.union = union
        self.heldout_pairs = list(heldout)
        self.align = align
        self.ref = ref

    # -- local objectives ------------------------------------------------------------
    def _losses(self, shared: SharedModel, batches: dict[str, list[EncodedPair]]) -> dict[str, Any]:
        return {m: dpo_batch(shared.model, b, self.ref, self.align.dpo_beta, shared.pad_id) for m, b in batches.items()}

    def _train(self, shared: SharedModel, method: str, objectives: Sequence[str], seed: int,
               prox: Callable[[], torch.Tensor] | None, on_step: StepCallback | None) -> dict[str, float]:
        a = self.align
        s = self.settings.train
        steps = self.settings.steps_for(len(self.union))
        samplers = {m: _Sampler(self.pairs[m], derive_seed(seed, m)) for m in objectives}
        union = _Sampler([p for m in objectives for p in self.pairs[m]], derive_seed(seed, "union"))
        per_obj = {m: [] for m in objectives}  # type: dict[str, list[float]]
        lambdas: list[np.ndarray] = []
        cosines: list[float] = []
        accs: list[float] = []
        avail = [m in objectives for m in a.objectives]
        pref = restricted_preference(a.preference, avail)[[i for i, ok in enumerate(avail) if ok]]
        params = list(shared.params.values())

        def extra() -> torch.Tensor:
            return prox() if prox is not None else torch.zeros(())

        def step(_: int) -> tuple[float, int]:
            if method in ("sft", "dpo"):
                batch = union.take(s.batch_size * len(a.objectives))
                if method == "sft":
                    loss, n = sft_batch(shared.model, batch, shared.pad_id)
                else:
                    out = dpo_batch(shared.model, batch, self.ref, a.dpo_beta, shared.pad_id)
                    loss, n = out.loss, out.tokens
                    accs.append(out.accuracy)
                (loss + extra()).backward()
                return float(loss.detach()), n
            outs = self._losses(shared, {m: samplers[m].take(s.batch_size) for m in objectives})
            for m, o in outs.items():
                per_obj[m].append(float(o.loss.detach()))
                accs.append(o.accuracy)
            n = sum(o.tokens for o in outs.values())
            if method != "firm":  # scalarized (and single-objective fmgda passes): sum_m p_m L_m
                loss = sum(w * outs[m].loss for w, m in zip(pref, objectives, strict=True))
                (loss + extra()).backward()
                lambdas.append(pref)
                return float(loss.detach()), n
            grads = []
            for m in objectives:  # FIRM: one backward per objective -> g_m
                (outs[m].loss + extra()).backward()
                grads.append([p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params])
                for p in params:
                    p.grad = None
            lam = firm_weights(grads, pref, a.beta)
            if len(grads) > 1:
                cosines.append(_cosines(grads))
            for k, p in enumerate(params):
                p.grad = torch.stack([float(w) * g[k] for w, g in zip(lam, grads, strict=True)]).sum(dim=0)
            lambdas.append(lam)
            return float(sum(float(w) * outs[m].loss.detach() for w, m in zip(lam, objectives, strict=True))), n

        shared.model.train()
        losses, tokens, seconds = optimize(shared.params, replace(s, steps=steps), step, on_step)
        shared.model.eval()
        out = {"train_loss": float(np.mean(losses)) if losses else float("nan"), "steps": float(steps),
               "tokens": float(tokens), "train_seconds": seconds}
        for m in objectives:
            if per_obj[m]:
                out[f"loss_{m}"] = float(np.mean(per_obj[m]))
        if lambdas:
            lam_mean = np.mean(np.stack(lambdas), axis=0)
            for w, m in zip(lam_mean, objectives, strict=True):
                out[f"lambda_{m}"] = float(w)
        if cosines:
            out["grad_cosine"] = float(np.mean(cosines))
        if accs:
            out["train_reward_acc"] = float(np.mean(accs))
        return out

    def fit(self, shared: SharedModel, global_state: StateDict, round_num: int, seed: int,
            on_step: StepCallback | None = None, **_: Any) -> ClientUpdate:
        """Train from the global adapter; FMGDA returns M per-objective deltas in ``extra``."""
        a = self.align
        objectives = [m for m in a.objectives if self.pairs[m]]
        base_seed = derive_seed(seed, round_num, self.client_id)
        prox = None
        if self.settings.proximal_mu > 0:
            anchor = {k: v.detach() for k, v in global_state.items()}
            mu = self.settings.proximal_mu

            def prox() -> torch.Tensor:
                return proximal_term(shared.params, anchor, mu)

        scalars: dict[str, float] = {}
        extra: dict[str, StateDict] = {}
        delta: StateDict = {}
        if a.method == "fmgda":
            parts = []
            for m in objectives:
                shared.set_state(global_state)
                parts.append(self._train(shared, "scalarized", [m], derive_seed(base_seed, m), prox, on_step))
                extra[m] = sub(shared.get_state(), global_state)
                scalars[f"loss_{m}"] = parts[-1].get(f"loss_{m}", float("nan"))
            for key in ("steps", "tokens", "train_seconds"):
                scalars[key] = float(sum(p[key] for p in parts))
            scalars["train_loss"] = float(np.mean([p["train_loss"] for p in parts]))
        else:
            shared.set_state(global_state)
            scalars = self._train(shared, a.method, objectives, base_seed, prox, on_step)
            delta = sub(shared.get_state(), global_state)
        secs = scalars["train_seconds"]
        scalars["tokens_per_s"] = scalars["tokens"] / secs if secs > 0 else 0.0
        for m in a.objectives:
            scalars[f"pairs_{m}"] = float(len(self.pairs[m]))
            scalars[f"missing_{m}"] = 0.0 if self.pairs[m] else 1.0
        report = None
        if self.monitor is not None:  # the silent-failure monitor (assembly/monitoring.py), as for SFT
            if extra:  # FMGDA: the client's model is the global one plus its mean per-objective delta
                trained = {k: v + sum(d[k] for d in extra.values()) / len(extra) for k, v in global_state.items()}
            else:
                trained = shared.get_state()
            held = [p.chosen for p in self.heldout_pairs]
            report, scalars["monitor_seconds"] = self.monitor.run(
                shared, seed, round_num, self.client_id, global_state, trained, held, self.group,
                secret=self.secret(),
            )
        return ClientUpdate(self.client_id, len(self.union), delta, scalars, extra, monitor=report)

    @torch.no_grad()
    def evaluate(self, shared: SharedModel, global_state: StateDict, *_: Any, **__: Any) -> EvalResult:
        """The global adapter's loss on this client's own held-out pairs (DPO loss; SFT: chosen NLL)."""
        shared.set_state(global_state)
        shared.model.eval()
        pairs = self.heldout_pairs or self.union[: self.settings.max_eval_examples]
        if not pairs:
            return EvalResult(self.client_id, 0, float("nan"), 0)
        total, n_tok = 0.0, 0
        bs = max(1, self.settings.eval_batch_size // 2)
        for i in range(0, len(pairs), bs):
            chunk = pairs[i : i + bs]
            if self.align.method == "sft":
                loss = sft_batch(shared.model, chunk, shared.pad_id)[0]
            else:
                loss = dpo_batch(shared.model, chunk, self.ref, self.align.dpo_beta, shared.pad_id).loss
            total += float(loss) * len(chunk)
            n_tok += sum(q.chosen.num_targets + q.rejected.num_targets for q in chunk)
        loss_mean = total / len(pairs)
        return EvalResult(self.client_id, len(pairs), loss_mean if math.isfinite(loss_mean) else float("nan"), n_tok)
