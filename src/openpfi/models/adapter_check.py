"""Check an adapter against the model it is loaded into: base model, LoRA rank and scale, targets, shapes.

A peft folder for another base or rank must fail with one line that names the mismatch; it must
never load "successfully" with some tensors left at their init (peft itself only warns about
missing adapter keys and leaves every such LoRA B at zero, so the model generates like the base).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from openpfi.errors import UserError
from openpfi.models.lora import read_adapter_file
from openpfi.models.registry import BUNDLED
from openpfi.runfolder.adapter import (
    A_SUFFIX,
    B_SUFFIX,
    CONFIG_FILE,
    MERGED_SUFFIX,
    AdapterFolder,
    AdapterLayout,
    read_adapter_folder,
)

UNSUPPORTED = {"use_dora": "DoRA", "use_rslora": "rsLoRA scaling", "lora_bias": "LoRA biases", "modules_to_save": "modules_to_save"}


def base_aliases(layout: AdapterLayout) -> set[str]:
    """Names a peft config may use for this base: openpfi's name, its folder, its hub id."""
    names = {layout.base_name, layout.base_model}
    spec = BUNDLED.get(layout.base_name)
    if spec is not None:
        names.add(spec.hf_id)
    return {n for n in names if n}


def _same_base(name: str, aliases: Iterable[str]) -> bool:
    def norm(s: str) -> str:
        return s.rstrip("/").rsplit("/", 1)[-1].lower()

    return any(name == a or norm(name) == norm(a) for a in aliases)


def check_config(folder: AdapterFolder, layout: AdapterLayout, where: str) -> None:
    """The folder's adapter_config.json / openpfi-adapter.json against this run's model and [lora]."""
    cfg, info = folder.config, folder.info
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise UserError(f"{where} is a {cfg.get('peft_type')} adapter; openpfi loads LoRA adapters only")
    for key, what in UNSUPPORTED.items():
        if cfg.get(key):
            raise UserError(f"{where} uses {what} ({key} in {CONFIG_FILE}), which openpfi does not support")
    sha = str(info.get("base_sha256", ""))
    base = str(info.get("base_model") or cfg.get("base_model_name_or_path") or "")
    if sha and layout.base_sha256 and sha != layout.base_sha256:
        raise UserError(
            f"{where} belongs to base model {base!r} (weights sha256 {sha[:12]}...), but this run's model is "
            f"{layout.base_name!r} (sha256 {layout.base_sha256[:12]}...); set model.name to the adapter's base "
            "or pass an adapter trained on this model"
        )
    if not sha and base and not _same_base(base, base_aliases(layout)):
        raise UserError(
            f"{where} was trained on base model {base!r}, but this run's model is {layout.base_name!r}; set "
            f"model.name to that base, or edit base_model_name_or_path in its {CONFIG_FILE} if it is this same model"
        )
    if int(cfg.get("r", layout.r)) != layout.r:
        raise UserError(f"{where} has LoRA rank r = {cfg['r']}, but lora.r = {layout.r}; set lora.r = {cfg['r']}")
    if cfg.get("rank_pattern"):
        raise UserError(
            f"{where} has per-module ranks (rank_pattern, e.g. a model with merged deltas); export it with "
            "`openpfi export --format merged` and use that folder as model.name"
        )
    alpha = float(cfg.get("lora_alpha", layout.alpha))
    if alpha != layout.alpha or cfg.get("alpha_pattern"):
        raise UserError(f"{where} has lora_alpha = {alpha:g}, but lora.alpha = {layout.alpha:g}; set lora.alpha = {alpha:g}")
    targets = cfg.get("target_modules") or []
    if isinstance(targets, str):
        raise UserError(f"{where} names its target modules by the pattern {targets!r}; openpfi needs a list of names")
    extra = sorted(set(targets) - set(layout.targets))
    if extra:
        raise UserError(f"{where} adapts {extra}, which lora.targets {list(layout.targets)} lacks; add them to lora.targets")


def check_state(state: Mapping[str, torch.Tensor], params: Mapping[str, Any], layout: AdapterLayout, where: str,
                zero_b_left_out: bool = False) -> None:
    """Every tensor must be one of the model's LoRA tensors with its shape; every module with both
    factors (``zero_b_left_out``: an openpfi folder may leave out a B that is zero)."""
    unknown = sorted(set(state) - set(params))
    if unknown and not set(state) & set(params):
        raise UserError(
            f"{where} holds none of this model's LoRA tensors (e.g. {unknown[0]!r}; the model has names like "
            f"{sorted(params)[0]!r}); it belongs to another base model or another lora.targets"
        )
    if unknown:
        raise UserError(f"{where} has {len(unknown)} tensors this model does not have, e.g. {unknown[0]!r} "
                        "(another base model or lora.targets?)")
    for k, v in state.items():
        want = tuple(params[k].shape)
        if tuple(v.shape) == want:
            continue
        rank_axis = 0 if k.endswith(A_SUFFIX) else 1
        if v.dim() == 2 and len(want) == 2 and v.shape[1 - rank_axis] == want[1 - rank_axis]:
            raise UserError(f"{where} has LoRA rank {v.shape[rank_axis]} in {k!r}, but lora.r = {layout.r}; "
                            f"set lora.r = {v.shape[rank_axis]}")
        raise UserError(f"{where}: tensor {k!r} has shape {tuple(v.shape)}, this model needs {want}; the adapter "
                        f"belongs to another base model than {layout.base_name!r}")
    for k in state:
        if k.endswith(B_SUFFIX) and k.removesuffix(B_SUFFIX) + A_SUFFIX not in state:
            raise UserError(f"{where} has {k!r} without its lora_A; pass the whole adapter")
        if k.endswith(A_SUFFIX) and k.removesuffix(A_SUFFIX) + B_SUFFIX not in state and not zero_b_left_out:
            raise UserError(f"{where} has {k!r} without its lora_B (it would load as zero); pass the whole adapter")


def read_checked_adapter(path: str, layout: AdapterLayout, params: Mapping[str, Any], what: str = "model.adapter"
                         ) -> dict[str, torch.Tensor]:
    """A starting adapter (``model.adapter``): a peft folder (adapter_config.json + adapter_model.safetensors,
    e.g. any of openpfi's checkpoints or exports) or a bare .safetensors file of LoRA weights, checked
    against this model. Mismatches are refused with one line naming them."""
    p = Path(path).expanduser()
    where = f"{what} {p}"
    if p.is_dir() and (p / CONFIG_FILE).is_file():
        try:
            folder = read_adapter_folder(p)
        except (OSError, ValueError) as err:
            raise UserError(f"{where} is not a readable adapter folder ({err})") from None
        check_config(folder, layout, where)
        state = {k: v.float() for k, v in folder.state.items()}
        if any(k.endswith(MERGED_SUFFIX) for k in state):
            raise UserError(f"{where} carries merged deltas; export it with `openpfi export --format merged` "
                            "and use that folder as model.name")
        check_state(state, params, layout, where, zero_b_left_out=bool(folder.info))
        return state
    state = read_adapter_file(path)
    check_state(state, params, layout, where)
    return state
