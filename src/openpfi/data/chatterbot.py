"""The ChatterBot corpus (package ``chatterbot-corpus==1.3.3``).

``chatterbot_corpus/data/<language>/<topic>.yml`` (28 languages, 237 files) each
hold ``{"categories": [...], "conversations": [[turn, turn, ...], ...]}``:
7,644 short conversations. Each pair of consecutive turns gives one example:

- prompt: a turn (usually a question); response: the next turn;
- group: the language (folder name, e.g. ``"english"``);
- label: the topic (file stem, e.g. ``"greetings"``).

Parsed with PyYAML's safe loader (libyaml when available). Non-string turns
(e.g. YAML booleans) and malformed conversations are skipped.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from openpfi.assets import package_files
from openpfi.data.types import Example
from openpfi.errors import UserError

DIST = "chatterbot-corpus"
PREFIX = "chatterbot_corpus/data/"
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def topic_files() -> list[Path]:
    """All topic files, sorted by language then topic."""
    return package_files(DIST, PREFIX, ".yml", "data.source = \"chatterbot\"")


def file_examples(path: Path) -> list[Example]:
    """The examples of one ``<language>/<topic>.yml`` file."""
    language, topic = path.parent.name, path.stem
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(
            f"{path} is not valid YAML ({type(e).__name__}); reinstall `{DIST}`"
        ) from None
    conversations = doc.get("conversations") if isinstance(doc, dict) else None
    examples: list[Example] = []
    for conversation in conversations or []:
        if not isinstance(conversation, list):
            continue
        turns = [t.strip() for t in conversation if isinstance(t, str) and t.strip()]
        examples.extend(
            Example(q, a, language, topic) for q, a in itertools.pairwise(turns)
        )
    return examples


@functools.lru_cache(maxsize=1)
def _load_all() -> tuple[tuple[Example, ...], tuple[str, ...]]:
    files = topic_files()
    examples = [e for path in files for e in file_examples(path)]
    return tuple(examples), tuple(str(f) for f in files)


def languages() -> list[str]:
    """The languages in the corpus, sorted."""
    return sorted({Path(f).parent.name for f in _load_all()[1]})


def load(selected: Sequence[str] = ()) -> tuple[tuple[Example, ...], tuple[str, ...]]:
    """Examples (and files) of all languages, or of the ``selected`` ones only."""
    examples, files = _load_all()
    if not selected:
        return examples, files
    available = languages()
    unknown = sorted(set(selected) - set(available))
    if unknown:
        raise UserError(
            f"chatterbot has no language {', '.join(map(repr, unknown))}; "
            f"choose among: {', '.join(available)}"
        )
    keep = set(selected)
    return (
        tuple(e for e in examples if e.group in keep),
        tuple(f for f in files if Path(f).parent.name in keep),
    )
