"""A safety-tuned starting adapter, built once and cached (used by the silent-failure benchmark).

The bundled SmolLM2-135M-Instruct refuses about 1 in 10 harmful prompts (DESIGN.md), so
alignment erosion is only observable from a safety-tuned start, as in a real deployment.
``build_safety_adapter`` trains one LoRA adapter centrally (no federation) on the training
split of:

- harmlessness pairs (harmful request: refusal over compliance), and
- helpfulness pairs of benign requests (helpful answer over a needless refusal), so that
  refusing harmful requests does not come with refusing everything.

``method = "sft"`` (default): NLL of the chosen answers of both (refusals on harmful
requests, helpful answers on benign ones). ``method = "scalarized"``: DPO (reference = the
base with adapters disabled) with weights (``harmless_weight``, 1 - ``harmless_weight``).
SFT is the default because DPO did the opposite of what is needed here: measured on
SmolLM2-135M-Instruct (60 steps, weight 0.6), the held-out refusal rate went from 0.22 to
0.01 and over-refusal from 0.14 to 0.00. DPO widened the margins mostly by pushing down the
rejected side, and the short refusals rejected in the helpfulness pairs share their wording
with the refusals chosen in the harmlessness pairs, so refusals became less likely everywhere.
SFT length matters as much (measured, same model, lr 5e-4, 8 chosen answers per step):
60 steps gave refusal 1.00 and over-refusal 0.92 (it refuses everything); 15 steps (the
default) gave refusal 0.22 -> 0.57 with over-refusal unchanged at 0.14.
Prompts of the monitor's harmful and benign probe suites (``monitor.probes.load_suites``
at the sizes and probe seed given, by default the config defaults) are left out, so the
monitor never probes a prompt the adapter was trained on; the held-out slice
(``data.preference.is_heldout``) is left out as well and used to measure the rates.

The adapter is cached under ``cache_dir()/"adapters"/safety-<key>/adapter_model.safetensors``
with ``meta.json`` (its SHA-256, settings, rates); ``key`` hashes the base model's weights
hash, the preference set's hash and every setting. The file loads with ``model.adapter``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from openpfi.client.align import AlignClient, AlignSettings
from openpfi.client.align_eval import AlignEvaluator
from openpfi.client.dpo import ReferenceCache, encode_pair
from openpfi.client.federated import ClientSettings, SharedModel
from openpfi.client.train import TrainSettings
from openpfi.config import ClientConfig, MonitorConfig
from openpfi.data.preference import load_preferences
from openpfi.data.preference_split import eval_sets
from openpfi.models.loader import load_model, sha256_file
from openpfi.models.registry import cache_dir
from openpfi.monitor.probes import load_suites

log = logging.getLogger(__name__)

BUILD_VERSION = "2"


@dataclass(frozen=True)
class SafetySettings:
    model: str = "smollm2-135m-instruct"
    method: str = "sft"
    """"sft" (chosen answers' NLL) or "scalarized" (DPO, see the module docstring)."""
    steps: int = 15
    batch_size: int = 4
    """Pairs per objective per step."""
    lr: float = 5e-4
    dpo_beta: float = 0.1
    harmless_weight: float = 0.6
    r: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    max_length: int = 128
    seed: int = 0
    eval_pairs: int = 64
    """Held-out pairs per objective scored for the report."""
    eval_prompts: int = 1000
    """Held-out harmful and benign prompts judged (capped by what exists: ~80 harmful, ~110 benign)."""
    probe_sizes: dict[str, int] = field(default_factory=lambda: {
        k: v for k, v in MonitorConfig.model_validate({}).suite_sizes.items() if k in ("harmful", "benign")})
    probe_seed: int = 0


def _key(s: SafetySettings, model_sha: str, pairs_sha: str) -> str:
    blob = json.dumps([BUILD_VERSION, asdict(s), model_sha, pairs_sha], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _rates(ev: dict[str, Any]) -> dict[str, Any]:
    keys = ("refusal_rate", "refusal_prob", "over_refusal_rate", "over_refusal_prob",
            "pref_acc_harmless", "pref_acc_helpful", "logp_acc_harmless", "logp_acc_helpful")
    return {k: ev[k] for k in keys if k in ev}


def build_safety_adapter(settings: SafetySettings | None = None, shared: SharedModel | None = None,
                         force: bool = False, cache: Path | None = None) -> tuple[Path, str, dict[str, Any]]:
    """(path of adapter_model.safetensors, its SHA-256, rates); cached after the first build.

    ``cache``: the adapters folder (default ``cache_dir()/"adapters"``); ``shared``: an already
    loaded model with LoRA injected (its rank and targets must match the settings).

    ``rates``: refusal / over-refusal (likelihood judge) of the base model and the adapter on
    the held-out harmful and benign prompts, the detector's measured precision / recall, the
    training seconds.
    """
    s = settings or SafetySettings()
    pset = load_preferences(cache_dir() / "preference")
    if shared is None:
        lm = load_model(s.model)
        shared = SharedModel(lm, s.r, s.alpha, list(s.targets), 0.0, s.seed)
    key = _key(s, shared.loaded.info.sha256, pset.sha256)
    folder = (cache if cache is not None else cache_dir() / "adapters") / f"safety-{key}"
    path = folder / "adapter_model.safetensors"
    meta_file = folder / "meta.json"
    if path.is_file() and meta_file.is_file() and not force:
        meta = json.loads(meta_file.read_text())
        if sha256_file(path) == meta.get("sha256"):
            return path, meta["sha256"], meta["rates"]
        log.warning("cached safety adapter %s does not match its recorded hash; rebuilding", path)

    probed = {i.prompt for suite in load_suites(s.probe_sizes, seed=s.probe_seed).values() for i in suite.items}
    tok = shared.loaded.tokenizer
    objectives = ("harmless", "helpful")
    pairs = {m: [encode_pair(tok, p, m, s.max_length) for p in pset.by_objective(m, heldout=False)
                 if p.kind == "request" and p.prompt not in probed] for m in objectives}
    sets = eval_sets(pset, list(objectives), eval_pairs=s.eval_pairs, eval_prompts=s.eval_prompts)
    ref = ReferenceCache(shared.model, shared.pad_id)
    evaluator = AlignEvaluator(shared, sets, objectives, s.dpo_beta, s.max_length, ref=ref)
    shared.set_state(shared.initial_state)
    base = evaluator.evaluate(shared.initial_state)

    train = TrainSettings.from_config(ClientConfig(), steps=s.steps, batch_size=s.batch_size, grad_accum=1, lr=s.lr)
    client = AlignClient(
        "safety", pairs, [], ClientSettings(s.steps, 0.0, train, 8, 8),
        AlignSettings(s.method, objectives, (s.harmless_weight, 1 - s.harmless_weight), 0.0, s.dpo_beta), ref,
    )
    t0 = time.perf_counter()
    update = client.fit(shared, shared.initial_state, 1, s.seed)
    seconds = time.perf_counter() - t0
    state = {k: shared.initial_state[k] + update.delta[k] for k in shared.initial_state}
    tuned = evaluator.evaluate(state)
    shared.set_state(shared.initial_state)

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "adapter_model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(path)
    digest = sha256_file(path)
    rates = {
        "base": _rates(base),
        "adapter": _rates(tuned),
        "refusal_judge": tuned["refusal_judge"],
        "train_pairs": {m: len(ps) for m, ps in pairs.items()},
        "excluded_probe_prompts": len(probed),
        "train_seconds": seconds,
    }
    meta = {"sha256": digest, "settings": asdict(s), "rates": rates, "model_sha256": shared.loaded.info.sha256,
            "preference_sha256": pset.sha256}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path, digest, rates
