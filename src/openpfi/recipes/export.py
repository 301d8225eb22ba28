"""Recipe: export a run's global or personal model for use outside openpfi.

    --format peft     OUT/adapter_config.json + adapter_model.safetensors (+ merged_deltas.safetensors),
                      the tokenizer with its chat template, README.md; for a bundled, tiny-random or
                      .gguf base also OUT/base/ (a Hugging Face folder of the base weights), which
                      adapter_config.json's base_model_name_or_path names, so the folder stands alone
    --format merged   OUT/: a full Hugging Face model folder (config.json, model.safetensors in
                      float32, generation_config.json, tokenizer, chat template, README.md): the
                      adapter and any merged deltas folded into the base weights by peft's
                      ``merge_and_unload``

Everything is checked first (run folder, round, client, output folder) and written into a
temporary sibling folder that is renamed into place at the end: bad input writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from openpfi import __version__
from openpfi.assembly.run_model import RunModel, choose_model, load_run_model
from openpfi.errors import UserError
from openpfi.models.loader import hf_folder
from openpfi.models.registry import BUNDLED
from openpfi.runfolder.adapter import AdapterLayout, new_folder, write_adapter_files

FORMATS = ("peft", "merged")
STANDALONE_KINDS = ("bundled", "tiny-random", "gguf")
"""Bases whose folder lives in openpfi's cache (or nowhere): copied into an exported peft folder."""
HF_LICENCES = {"apache-2.0": "apache-2.0", "mit": "mit", "bsd-3-clause": "bsd-3-clause", "gemma terms of use": "gemma"}


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out} is not empty; choose another folder or pass --force to replace it")


def export(run_dir: Path, out: Path, fmt: str, round_num: int | None = None, client: str | None = None,
           force: bool = False, store: Path | None = None) -> Path:
    """Write the chosen model of ``run_dir`` to ``out`` in ``fmt`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    out = Path(out).absolute()
    check_out(out, force)
    choose_model(run_dir, round_num, client, store)  # bad round / client refused before any loading
    rm = load_run_model(run_dir, round_num, client, store)
    with new_folder(out) as tmp:
        if fmt == "peft":
            _write_peft(rm, tmp, out)
        else:
            _write_merged(rm, tmp)
        (tmp / "README.md").write_text(model_card(rm, fmt, tmp))
    return out


def _copy_tree(src: Path, dst: Path) -> None:
    """Hard links where the file system allows (the base weights are never written in place), else copies."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy)


def _plain_config(folder: Path) -> None:
    """Drop the GGUF ``quantization_config`` from a copied base's config.json: its weights are
    dequantized float32, and transformers refuses to save a model it thinks is quantized. The file
    may be a hard link into the cache: replaced, never written in place."""
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    if cfg.pop("quantization_config", None) is not None:
        path.unlink()
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _write_peft(rm: RunModel, tmp: Path, out: Path) -> None:
    info = rm.shared.loaded.info
    layout = rm.shared.layout
    if info.kind in STANDALONE_KINDS:
        _copy_tree(hf_folder(info), tmp / "base")
        (tmp / "base" / "openpfi-source.json").unlink(missing_ok=True)
        _plain_config(tmp / "base")
        layout = AdapterLayout(layout.r, layout.alpha, layout.targets, layout.dropout, str(out / "base"),
                               layout.base_name, layout.base_sha256)
    ch = rm.choice
    write_adapter_files(tmp, rm.state, layout, info={"round": ch.round, "client": ch.client, "what": ch.what,
                                                     "run": str(ch.run.path.absolute())})
    rm.shared.loaded.tokenizer.save_pretrained(tmp)


def _write_merged(rm: RunModel, tmp: Path) -> None:
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = hf_folder(rm.shared.loaded.info)
    config = AutoConfig.from_pretrained(str(folder))
    if getattr(config, "quantization_config", None) is not None:  # dequantized GGUF weights: plain float32
        del config.quantization_config
    base = AutoModelForCausalLM.from_pretrained(str(folder), config=config, dtype=torch.float32)
    adapter = tmp / ".adapter"
    adapter.mkdir()
    write_adapter_files(adapter, rm.state, rm.shared.layout)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    shutil.rmtree(adapter)
    merged.config.dtype = torch.float32
    gen = merged.generation_config
    if gen is not None and rm.shared.model.generation_config is not None:
        gen.pad_token_id = rm.shared.model.generation_config.pad_token_id
        gen.eos_token_id = rm.shared.model.generation_config.eos_token_id
    merged.save_pretrained(tmp, safe_serialization=True)
    rm.shared.loaded.tokenizer.save_pretrained(tmp)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def hf_licence(licence: str) -> str:
    """The Hugging Face model-card licence id of a licence string ("other" when unknown)."""
    low = licence.lower()
    return next((v for k, v in HF_LICENCES.items() if low.startswith(k)), "other")


def model_card(rm: RunModel, fmt: str, folder: Path) -> str:
    """README.md: what the folder holds, from which run, the base's licence and weights hash, how to load it."""
    model: dict[str, Any] = rm.manifest.get("model", {})
    ch, cfg = rm.choice, rm.choice.cfg
    name = str(model.get("name", cfg.model.name))
    licence = str(model.get("licence", "unknown"))
    spec = BUNDLED.get(name)
    base_ref = spec.hf_id if spec else name
    weights = sorted(p.name for p in folder.glob("*.safetensors"))
    rows = [
        ("model", ch.what),
        ("run folder", str(ch.run.path.absolute())),
        ("base model", f"{name}" + (f" ({spec.hf_id}, {spec.package} GGUF dequantized to float32)" if spec else "")),
        ("base weights sha256", str(model.get("sha256", ""))),
        ("base licence", licence),
        ("personalization", cfg.personalization.method),
        ("LoRA", f"r = {cfg.lora.r}, alpha = {cfg.lora.alpha:g}, targets {', '.join(cfg.lora.targets)}, "
                 f"aggregation {cfg.lora.aggregation}"),
        *((f"sha256 of {w}", _sha256(folder / w)) for w in weights),
        ("exported by", f"openpfi {__version__}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    if fmt == "peft":
        load = ("from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n"
                'model = AutoPeftModelForCausalLM.from_pretrained("THIS_FOLDER")  # base: base_model_name_or_path\n'
                'tok = AutoTokenizer.from_pretrained("THIS_FOLDER")')
        library = "peft"
    else:
        load = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                'model = AutoModelForCausalLM.from_pretrained("THIS_FOLDER")\n'
                'tok = AutoTokenizer.from_pretrained("THIS_FOLDER")')
        library = "transformers"
    lic = hf_licence(licence)
    front = [f"license: {lic}", *([f"license_name: {licence!r}"] if lic == "other" else []),
             f"base_model: {base_ref}", f"library_name: {library}", "tags: [openpfi, federated-learning, lora]"]
    return ("---\n" + "\n".join(front) + "\n---\n\n"
            f"# {ch.what}\n\nExported with `openpfi export --format {fmt}` from an openpfi run. The base "
            f"model's licence ({licence}) applies to these weights.\n\n| | |\n|---|---|\n{table}\n\n"
            f"## Load\n\n```python\n{load}\n```\n")

