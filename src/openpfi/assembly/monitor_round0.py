"""Round 0 of the monitor on the server: the base and starting models on the public probes, the refusal
judge checked against generated answers, the public group texts' losses (cached across runs)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

from openpfi.assembly.monitor_plan import MonitorPlan
from openpfi.assembly.setup_cache import cached_setup, setup_key
from openpfi.client.scoring import generate_chat
from openpfi.models.loader import sha256_state
from openpfi.monitor.probes import ProbeSuite, holdout_items
from openpfi.monitor.probes.refusal import (
    JUDGE_ITEMS_PER_PROMPT,
    detector_precision_recall,
    is_refusal,
    judge_refuses,
    judge_vs_detector,
    refusal_items,
)
from openpfi.monitor.probes.run import results_to_dict, run_probes
from openpfi.monitor.types import global_name
from openpfi.monitor.vector.model import evaluate_public, points_of, public_points, values_of
from openpfi.strategies.monitor_global import group_losses
from openpfi.strategies.monitor_server import point_to_dict

log = logging.getLogger(__name__)


def round0_group_setup(shared: Any, start_state: Mapping[str, Any], scorer: Any,
                 group_suite: ProbeSuite | None) -> dict[str, Any]:
    """Round 0 of the gap across groups: the starting model's loss on each public group text,
    cached apart from the rest of round 0 (which runs of any groups share)."""
    if group_suite is None:
        return {"round0_group_losses": None, "group_suite_sha256": None}
    key = setup_key(dataclasses.asdict(shared.loaded.info), shared.initial_state, start_state,
                    {"server:groups": group_suite.sha256}, {"what": "round0_group_losses"})

    def compute() -> dict[str, Any]:
        shared.set_state(dict(start_state))
        return {"round0_group_losses": group_losses(scorer, group_suite), "group_suite_sha256": group_suite.sha256}

    return cached_setup(key, compute)


def round0_setup(plan: MonitorPlan, shared: Any, start_state: Mapping[str, Any], scorer: Any,
                    server_suites: Mapping[str, ProbeSuite]) -> dict[str, Any]:
    """Round 0 on the server: base model (adapters at their zero-B init) and starting model."""
    m = plan.cfg.monitor
    full = plan.suites
    base_state = shared.initial_state
    shared.set_state(base_state)
    base_clients = evaluate_public(scorer, {k: full[k] for k in ("ood", "capability") if k in full},
                                   ood_max_nll=m.ood_max_nll)
    base_items = run_probes(scorer, server_suites, batch=256) if server_suites else None
    base_global = values_of(base_items, ood_max_nll=m.ood_max_nll) if base_items is not None else {}
    shared.set_state(dict(start_state))
    refusal: dict[str, ProbeSuite] = {k: full[k] for k in ("harmful", "benign") if k in full}
    reference = public_points(scorer, refusal, ood_max_nll=m.ood_max_nll) if refusal else {}
    if not server_suites:
        start_items = None
    elif base_items is not None and sha256_state(dict(start_state)) == sha256_state(dict(base_state)):
        start_items = base_items  # no starting adapter: the round-0 model is the base model
    else:
        start_items = run_probes(scorer, server_suites, batch=256)
    start_global = points_of(start_items, ood_max_nll=m.ood_max_nll, base_model=base_global) if start_items else {}
    ref_global = {k: p for k, p in start_global.items() if k.startswith("alignment_erosion.")}
    return {
        "base_model": base_clients,
        "reference": {k: point_to_dict(p) for k, p in reference.items() if k.startswith("alignment_erosion.")},
        "base_global": base_global,
        "reference_global": {k: point_to_dict(p) for k, p in ref_global.items()},
        "round0_global": {global_name(k): point_to_dict(p) for k, p in start_global.items()},
        "round0_global_items": results_to_dict(start_items) if start_items else None,
        "refusal_judge": judge_check(plan, shared, scorer),
    }


def judge_check(plan: MonitorPlan, shared: Any, scorer: Any) -> dict[str, Any]:
    """The refusal judge against the keyword detector on the model ``shared`` holds (round 0:
    the starting model), on public held-out prompts only; the detector's held-out figures."""
    m = plan.cfg.monitor
    out: dict[str, Any] = {"detector": detector_precision_recall(), "prompts": 0,
                           "max_new_tokens": m.judge_check_max_new_tokens, "judge_vs_detector": None}
    if m.judge_check_prompts == 0:
        out["why"] = "monitor.judge_check_prompts = 0"
        return out
    held = holdout_items()
    harmful = [i.prompt for i in held["harmful"][: (m.judge_check_prompts + 1) // 2]]
    benign = [i.prompt for i in held["benign"][: m.judge_check_prompts // 2]]
    prompts = harmful + benign
    t0 = time.perf_counter()
    scores = scorer.logprobs([it for p in prompts for it in refusal_items(p)])
    k = JUDGE_ITEMS_PER_PROMPT
    judged = [judge_refuses(scores[i * k : (i + 1) * k]) for i in range(len(prompts))]
    texts = generate_chat(shared.model, shared.loaded.tokenizer, prompts, m.judge_check_max_new_tokens,
                          shared.pad_id)
    kinds = [True] * len(harmful) + [False] * len(benign)
    out.update(
        prompts=len(prompts),
        prompt_source="held-out harmful and benign prompts (monitor/probes/suites.py holdout_items), never probed",
        model="the starting model (round 0)",
        judge_vs_detector=judge_vs_detector(judged, texts, kinds),
        generations=[{"harmful": h, "prompt": p[:160], "answer": t, "judge_refuses": j, "detector_refuses": is_refusal(t)}
                     for p, t, j, h in zip(prompts, texts, judged, kinds, strict=True)],
        seconds=time.perf_counter() - t0,
    )
    log.info("refusal judge check: %d prompts, agreement with the detector %.2f (%.1fs)", len(prompts),
             out["judge_vs_detector"]["agreement"] or 0.0, out["seconds"])
    return out
