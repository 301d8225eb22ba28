"""Client side of federated alignment: SFT, DPO and multi-objective local training.

Every method runs ``local_steps`` optimizer steps of ``client.train.optimize`` (AdamW on
the LoRA parameters, the same loop, schedule and clipping as SFT) and sees the same number of pairs per
step: ``batch_size`` pairs per objective for the multi-objective methods, and
``batch_size * M`` pairs from the union for SFT and DPO. Per objective m the loss is
DPO on that objective's pairs, L_m.

- ``sft``: NLL of the chosen answers of the union.
- ``dpo``: DPO on the union of all pairs (Rafailov et al. 2023).
- ``scalarized``: linear scalarization, loss ``sum_m p_m L_m`` with the fixed preference p.
- ``firm``: FIRM ("Federated In-client Regularized Multi-objective Alignment for Large
  Language Models", arXiv 2511.16992), as DESIGN.md states it: at every local step the
  per-objective gradients g_m = grad L_m on the trainable LoRA parameters give the weights

      lambda = argmin_{lambda in simplex} 1/2 ||sum_m lambda_m g_m||^2 + beta'/2 ||lambda - p||^2

  with ``beta' = alignment.beta * tr(G) / M`` on the gradients' scale (``firm_weights``;
  ``algorithms.mgda`` explains the choice; beta = 0 is MGDA's min-norm point, beta -> inf
  is scalarization with p), and the step goes along ``sum_m lambda_m g_m`` (handed to the
  client optimizer as the gradient). The client uploads ONE adapter delta.
- ``fmgda``: FMGDA (Yang et al. 2023, "Federated Multi-Objective Learning"): for each
  objective m the client trains ``local_steps`` steps on L_m alone from the global
  adapter and uploads the M deltas (``ClientUpdate.extra``); the server solves MGDA over
  their averages (``strategies.align_server``). Same forward/backward count as FIRM.

A client without pairs for an objective trains on the others (the preference restricted
to them and renormalised, uniform if that leaves nothing) and says so in its
``ObjectiveFigures`` (client/objective_report.py: pairs, mean weights and losses per objective).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from openpfi.algorithms.mgda import SimplexSolution, gram_matrix, scaled_beta, solve_simplex_qp
from openpfi.algorithms.proximal import proximal_term
from openpfi.algorithms.state import StateDict, sub
from openpfi.client.dpo import DPOOutput, EncodedPair, ReferenceCache, dpo_batch, sft_batch
from openpfi.client.federated import ClientSettings, FederatedClient, SharedModel, derive_seed, own_figures
from openpfi.client.messages import ClientUpdate, EvalResult
from openpfi.client.objective_report import ObjectiveFigures
from openpfi.client.store import ClientStore
from openpfi.client.train import StepCallback, TrainResult, optimize

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


def firm_weights(grads: Sequence[Sequence[torch.Tensor]], preference: np.ndarray, beta: float) -> SimplexSolution:
    """FIRM's lambda from per-objective gradients (each a list of per-parameter tensors).

    ``beta`` is relative to the gradients' scale: the solver gets ``beta * tr(G) / M``
    (``algorithms.mgda.scaled_beta``; the module docstring there says why).
    """
    flat = [torch.cat([g.reshape(-1) for g in gs]) for gs in grads]
    gram = gram_matrix(flat)
    return solve_simplex_qp(gram, preference, scaled_beta(gram, beta))


def _cosines(grads: Sequence[Sequence[torch.Tensor]]) -> float:
    flat = [torch.cat([g.reshape(-1) for g in gs]).double() for gs in grads]
    vals = []
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            den = float(flat[i].norm() * flat[j].norm())
            if den > 0:
                vals.append(float(flat[i] @ flat[j]) / den)
    return float(np.mean(vals)) if vals else float("nan")


def _targets(pairs: Sequence[EncodedPair]) -> int:
    return sum(p.chosen.num_targets + p.rejected.num_targets for p in pairs)


class _Tally:
    """What a local run records per step: weights, per-objective losses, accuracies, gradient cosines."""

    def __init__(self, objectives: Sequence[str]):
        self.weights: list[np.ndarray] = []
        self.losses: dict[str, list[float]] = {m: [] for m in objectives}
        self.accs: list[float] = []
        self.cosines: list[float] = []
        self.cap_hits = 0

    def add_losses(self, outs: dict[str, DPOOutput]) -> None:
        for m, o in outs.items():
            self.losses[m].append(float(o.loss.detach()))
            self.accs.append(o.accuracy)

    def add_firm(self, sol: SimplexSolution, grads: Sequence[Sequence[torch.Tensor]]) -> None:
        self.weights.append(sol.weights)
        self.cap_hits += 0 if sol.converged else 1
        if len(grads) > 1:
            self.cosines.append(_cosines(grads))

    def mean_weights(self) -> dict[str, float]:
        if not self.weights:
            return {}
        return {m: float(w) for m, w in zip(self.losses, np.mean(np.stack(self.weights), axis=0), strict=True)}

    def mean_losses(self) -> dict[str, float]:
        return {m: float(np.mean(v)) for m, v in self.losses.items() if v}

    def extra_scalars(self) -> dict[str, float]:
        out = {}
        if self.cosines:
            out["grad_cosine"] = float(np.mean(self.cosines))
        if self.accs:
            out["train_reward_acc"] = float(np.mean(self.accs))
        return out

    @staticmethod
    def merged(tallies: Sequence[_Tally]) -> _Tally:
        """FMGDA's per-objective runs as one record (their losses side by side)."""
        out = _Tally([])
        for t in tallies:
            out.losses.update(t.losses)
            out.accs += t.accs
        return out


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
    def _train(self, shared: SharedModel, method: str, objectives: Sequence[str], seed: int,
               prox: Callable[[], torch.Tensor] | None, on_step: StepCallback | None) -> tuple[TrainResult, _Tally]:
        a = self.align
        avail = [m in objectives for m in a.objectives]
        pref = restricted_preference(a.preference, avail)[[i for i, ok in enumerate(avail) if ok]]
        tally = _Tally(objectives)
        samplers = {m: _Sampler(self.pairs[m], derive_seed(seed, m)) for m in objectives}
        union = _Sampler([p for m in objectives for p in self.pairs[m]], derive_seed(seed, "union"))
        params = list(shared.params.values())
        batch = self.settings.train.batch_size

        def extra() -> torch.Tensor:
            return prox() if prox is not None else torch.zeros(())

        def step(_: int) -> tuple[float, int, int]:
            if method in ("sft", "dpo"):
                pairs = union.take(batch * len(a.objectives))
                if method == "sft":
                    loss, n = sft_batch(shared.model, pairs, shared.pad_id)
                else:
                    out = dpo_batch(shared.model, pairs, self.ref, a.dpo_beta, shared.pad_id)
                    loss, n = out.loss, out.tokens
                    tally.accs.append(out.accuracy)
                (loss + extra()).backward()
                return float(loss.detach()), n, _targets(pairs)
            batches = {m: samplers[m].take(batch) for m in objectives}
            outs = {m: dpo_batch(shared.model, b, self.ref, a.dpo_beta, shared.pad_id) for m, b in batches.items()}
            n, targets = sum(o.tokens for o in outs.values()), sum(_targets(b) for b in batches.values())
            tally.add_losses(outs)
            if method != "firm":  # scalarized (and single-objective fmgda passes): sum_m p_m L_m
                loss = sum(w * outs[m].loss for w, m in zip(pref, objectives, strict=True))
                (loss + extra()).backward()
                tally.weights.append(pref)
                return float(loss.detach()), n, targets
            grads = []
            for m in objectives:  # FIRM: one backward per objective -> g_m
                (outs[m].loss + extra()).backward()
                grads.append([p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params])
                for p in params:
                    p.grad = None
            sol = firm_weights(grads, pref, a.beta)
            tally.add_firm(sol, grads)
            for k, p in enumerate(params):
                p.grad = torch.stack([float(w) * g[k] for w, g in zip(sol.weights, grads, strict=True)]).sum(dim=0)
            return float(sum(float(w) * outs[m].loss.detach() for w, m in zip(sol.weights, objectives,
                                                                               strict=True))), n, targets

        steps = self.settings.steps_for(len(self.union))
        shared.model.train()
        result = optimize(shared.params, replace(self.settings.train, steps=steps), step, on_step)
        shared.model.eval()
        return result, tally

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

        extra: dict[str, StateDict] = {}
        delta: StateDict = {}
        if a.method == "fmgda":
            runs = []
            for m in objectives:
                shared.set_state(global_state)
                runs.append(self._train(shared, "scalarized", [m], derive_seed(base_seed, m), prox, on_step))
                extra[m] = sub(shared.get_state(), global_state)
            results = [r for r, _ in runs]
            tally = _Tally.merged([t for _, t in runs])
            scalars = {"steps": float(sum(r.steps for r in results)), "tokens": float(sum(r.tokens for r in results)),
                       "train_seconds": float(sum(r.seconds for r in results)),
                       "train_loss": float(np.mean([r.mean_loss for r in results]))}
        else:
            shared.set_state(global_state)
            result, tally = self._train(shared, a.method, objectives, base_seed, prox, on_step)
            delta = sub(shared.get_state(), global_state)
            scalars = {"steps": float(result.steps), "tokens": float(result.tokens),
                       "train_seconds": result.seconds, "train_loss": result.mean_loss}
        secs = scalars["train_seconds"]
        scalars["tokens_per_s"] = scalars["tokens"] / secs if secs > 0 else 0.0
        figures = ObjectiveFigures({m: len(self.pairs[m]) for m in a.objectives},
                                   tally.mean_weights() if a.method != "fmgda" else {}, tally.mean_losses(),
                                   tally.cap_hits)
        scalars.update(figures.to_scalars())
        scalars.update(tally.extra_scalars())
        self._last_fit = (round_num, seed)
        self._record(round_num, {"train_loss": scalars["train_loss"], "tokens_per_s": scalars["tokens_per_s"]})
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
    def evaluate(self, shared: SharedModel, global_state: StateDict, round_num: int | None = None) -> EvalResult:
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
        result = EvalResult(self.client_id, len(pairs), loss_mean if math.isfinite(loss_mean) else float("nan"), n_tok)
        self._record(self._last_fit[0] if round_num is None else round_num, own_figures(result))
        return result
