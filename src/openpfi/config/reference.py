"""docs/CONFIG.md, generated from the config models' field docstrings (one table per section).

    python -m openpfi.config.reference docs/CONFIG.md      # rewrite the page
    python -m openpfi.config.reference                     # print it

tests/test_config_reference.py checks that the page lists every key and is up to date.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from openpfi.config.root import Config

HEADER = """# Config reference

Every key of the TOML config, its type, its default and what it does. A config file holds
only what differs from these defaults; `--set section.key=value` overrides any key. Unknown
keys, wrong types and out-of-range values are refused with one line naming the key.

This page is generated from the field docstrings in `src/openpfi/config/`:
`python -m openpfi.config.reference docs/CONFIG.md` rewrites it (a test checks it is current).
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in typing.get_args(annotation))
    if origin in (list, dict):
        args = ", ".join(_type_name(a).strip("`") for a in typing.get_args(annotation))
        return f"`{origin.__name__}[{args}]`"
    return f"`{getattr(annotation, '__name__', str(annotation))}`"


def _default(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict):
        return "`{" + ", ".join(f"{k} = {v}" for k, v in value.items()) + "}`"
    return f"`{value!r}`".replace("'", '"')


def _bounds(info: FieldInfo) -> str:
    out = []
    for m in info.metadata:
        for name, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length")):
            v = getattr(m, name, None)
            if v is not None:
                out.append(f"{sym} {v}")
    return f" ({', '.join(out)})" if out else ""


def _text(info: FieldInfo) -> str:
    return " ".join((info.description or "").split()).replace("|", "\\|")


def keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, FieldInfo, type[BaseModel]]]:
    """Every leaf key as (dotted name, field, its section model), in declaration order."""
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from keys(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info, model


def render() -> str:
    lines = [HEADER]
    section = None
    for key, info, model in keys():
        head = key.split(".", 1)[0] if "." in key else ""
        if head != section:
            section = head
            title = f"[{head}]" if head else "top level"
            doc = " ".join((model.__doc__ or "").split()) if head else ""
            lines += ["", f"## {title}", ""] + ([doc, ""] if doc and not doc.startswith("!!!") else [])
            lines += ["| key | type | default | what it does |", "|---|---|---|---|"]
        lines.append(f"| `{key}` | {_type_name(info.annotation)}{_bounds(info)} | {_default(info)} | {_text(info)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    text = render()
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
