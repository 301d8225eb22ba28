"""Public probe suites: the items (``items.py``), the package files they come from (``pools.py``),
seeded, hashed samples of them (``suites.py``), the refusal judge and detector (``refusal.py``) and
running a suite on a model (``run.py``).

The names most callers need are importable from here: ``from openpfi.monitor.probes import load_suites``.
"""

from __future__ import annotations

from openpfi.monitor.probes.items import (
    BUILD_VERSION,
    BBQItem,
    ChoiceItem,
    CrowsItem,
    ProbeSuite,
    PromptItem,
    TextItem,
    canonical_json,
    make_suite,
    subset_suite,
)
from openpfi.monitor.probes.pools import holdout_items, is_holdout, package_file, refusal_pairs
from openpfi.monitor.probes.suites import (
    DEFAULT_SIZES,
    SUITE_NAMES,
    check_pinned,
    group_items,
    group_probe_filter,
    load_suites,
    pinned_hashes,
    suite_manifest,
    verify_hashes,
)

__all__ = [
    "BUILD_VERSION", "DEFAULT_SIZES", "SUITE_NAMES", "BBQItem", "ChoiceItem", "CrowsItem", "ProbeSuite", "PromptItem",
    "TextItem", "canonical_json", "check_pinned", "group_items", "group_probe_filter", "holdout_items", "is_holdout",
    "load_suites", "make_suite", "package_file", "pinned_hashes", "refusal_pairs", "subset_suite", "suite_manifest",
    "verify_hashes",
]
