"""Users' own data as a Hugging Face ``datasets`` folder (``Dataset.save_to_disk``), read offline.

Rows are the same two formats as JSONL (``rows.py``): ``prompt`` / ``response`` columns, or a
``messages`` column of ``{role, content}`` lists; the client column (``data.client_field``)
names each row's client. A ``DatasetDict`` folder with several splits needs ``data.split``
(openpfi makes its own train / held-out split per client, so mixing a test split into the
clients' data is never done silently).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from openpfi.data.jsonl import no_rows, strict_hint
from openpfi.data.rows import BadRow, Fields, parse_object
from openpfi.data.types import Example, LoadResult
from openpfi.errors import UserError


def _open(folder: Path, split: str) -> Any:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise UserError('data.source = "hf" needs the `datasets` package: pip install datasets') from None
    try:
        ds = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{folder} is not a Hugging Face datasets folder ({first}); write one with Dataset.save_to_disk"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        names = sorted(ds)
        if split:
            if split not in ds:
                raise UserError(f"data.split = {split!r} is not a split of {folder}; its splits: {names}")
            return ds[split]
        if len(names) != 1:
            raise UserError(f"{folder} holds the splits {names}; choose one with data.split (e.g. data.split = \"train\")")
        return ds[names[0]]
    if split:
        raise UserError(f"{folder} is a single Dataset without splits; remove data.split")
    return ds


def data_files(folder: Path) -> list[str]:
    """Every file of the folder (hashed into manifest.json), in a stable order."""
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


def load(path: str, fields: Fields, *, split: str = "", strict: bool = True) -> LoadResult:
    if not path:
        raise UserError('data.source = "hf" needs a path: set data.path to the folder save_to_disk wrote')
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"data folder not found: {folder} (check data.path; a datasets folder from save_to_disk)")
    ds = _open(folder, split)
    examples: list[Example] = []
    skipped = 0
    for i, row in enumerate(ds):
        try:
            examples.append(parse_object(row, fields))
        except BadRow as e:
            if strict:
                raise UserError(f"{folder}, row {i}: {e}; {strict_hint()}") from None
            skipped += 1
    if not examples:
        raise no_rows(str(folder), skipped, fields)
    return LoadResult(examples=examples, skipped_rows=skipped, source_files=data_files(folder))
