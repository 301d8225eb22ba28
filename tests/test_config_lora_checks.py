"""Every refusal of a settings combination (assembly/compatibility.py, asked of the policies and
aggregations) and of the personalization patterns, before anything is loaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from openpfi.assembly.compatibility import check_combinations
from openpfi.config import load_config
from openpfi.errors import UserError

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.toml"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["personalization.method=fedsa-lora", "lora.aggregation=product"],
         'personalization.method = "fedsa-lora" shares only A, which lora.aggregation = "product"'),
        (["personalization.method=fedsa-lora", "lora.aggregation=stack"],
         'personalization.method = "fedsa-lora" shares only A, which lora.aggregation = "stack"'),
        (["personalization.method=ffa-lora", "lora.aggregation=product"],
         'personalization.method = "ffa-lora" freezes A, which lora.aggregation = "product"'),
        (["personalization.method=ffa-lora", "lora.aggregation=stack"],
         'personalization.method = "ffa-lora" freezes A, which lora.aggregation = "stack"'),
        (["personalization.method=ditto", "lora.aggregation=product"],
         'lora.aggregation = "product" re-factors or merges away'),
        (["personalization.method=ditto", "lora.aggregation=stack"],
         'lora.aggregation = "stack" re-factors or merges away'),
        (["lora.client_ranks=[2, 8]"], "naive averaging needs one rank"),
        (["lora.keep_merged=true"], 'lora.keep_merged applies to lora.aggregation = "product" only'),
        (["lora.keep_merged=true", "lora.aggregation=stack"], "lora.keep_merged applies to"),
        (["lora.aggregation=zeropad", "federation.strategy=fedadam"],
         'lora.aggregation = "zeropad" replaces the server optimizer'),
        (["lora.aggregation=product", "federation.strategy=fedyogi"],
         'lora.aggregation = "product" replaces the server optimizer'),
        (["lora.aggregation=stack", "federation.strategy=fedadagrad"], "replaces the server optimizer"),
        (["lora.aggregation=stack", "federation.strategy=fedavgm"], "replaces the server optimizer"),
        (["lora.aggregation=zeropad", "federation.server_lr=0.5"], "replaces the server optimizer"),
        (["lora.aggregation=zeropad", "lora.client_ranks=[4, 16]"], "lora.client_ranks [16] must lie in [1, lora.r = 8]"),
        (["lora.aggregation=zeropad", "lora.client_ranks=[0, 4]"], "lora.client_ranks [0] must lie in [1, lora.r = 8]"),
        (["personalization.personal_patterns=['(v_proj']"], "'(v_proj' is not a valid regex"),
        (["personalization.method=fedrep", "personalization.personal_patterns=[]"], "fedrep\" needs personal_patterns"),
        (["alignment.method=firm", "personalization.method=ditto"],
         'alignment.method = "firm" does not combine with personalization.method = "ditto"'),
        (["alignment.method=dpo", "personalization.method=local"],
         'alignment.method = "dpo" does not combine with personalization.method = "local"'),
        (["alignment.method=sft", "lora.aggregation=product"],
         'alignment.method = "sft" does not combine with lora.aggregation = "product"'),
        (["alignment.method=fmgda", "lora.aggregation=zeropad"],
         'alignment.method = "fmgda" does not combine with lora.aggregation = "zeropad"'),
        (["alignment.method=scalarized", "lora.client_ranks=[8]"],
         'alignment.method = "scalarized" does not combine with lora.client_ranks = [8]'),
        (["alignment.method=firm", "lora.aggregation=stack", "lora.client_ranks=[2, 4]"],
         "alignment trains one shared adapter, so unset one of them"),
    ],
)  # fmt: skip
def test_lora_combination_is_refused(overrides: list[str], needle: str) -> None:
    with pytest.raises(UserError, match=re.escape(needle)) as err:
        check_combinations(load_config(DEMO, overrides))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["alignment.method=firm"],
        ["personalization.method=ditto", "lora.aggregation=zeropad", "lora.client_ranks=[2, 4, 8]"],
        ["personalization.method=fedsa-lora", "lora.aggregation=zeropad"],
        ["lora.aggregation=product", "lora.keep_merged=true", "federation.strategy=fedprox"],
        ["lora.client_ranks=[8, 8]"],
    ],
)
def test_lora_combination_is_accepted(overrides: list[str]) -> None:
    check_combinations(load_config(DEMO, overrides))  # raises nothing
