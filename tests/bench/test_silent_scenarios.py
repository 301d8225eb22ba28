"""Scenario files of the silent benchmark: the shipped ones validate, malformed ones are refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from openpfi.bench.silent_plan import make_plan, run_config
from openpfi.bench.silent_scenarios import load_scenarios, parse_scenario
from openpfi.errors import UserError
from openpfi.monitor.modes import MODES

GOOD = """
[scenario]
description = "test"

[data]
num_clients = 4

[injection]
kind = "stereotype_text"
clients = 2
start_round = 2

[expect]
mode = "amplified_bias"
"""


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("quick", [False, True])
def test_shipped_scenarios_validate_and_cover_every_mode(quick: bool, tmp_path: Path):
    plan = make_plan(tmp_path / "out.json", quick=quick)
    expected = {s.expect for s in plan.scenarios}
    assert set(MODES) <= expected
    controls = [s for s in plan.scenarios if s.is_control]
    assert len(controls) >= (1 if quick else 2)
    for s in plan.scenarios:
        cfg = run_config(plan, s, seed=0)
        assert cfg.monitor.enabled
        assert s.injection.count(cfg.data.num_clients) <= cfg.data.num_clients
        if not s.is_control:
            assert s.injection.start_round + s.spec.expect.within_rounds - 1 <= cfg.federation.rounds
            if not quick:  # a clean round first: the client streams' reference (quick trades it for time)
                assert s.injection.start_round >= 2
    assert plan.seeds >= (1 if quick else 3)


def test_good_file_parses(tmp_path: Path):
    s = parse_scenario(_write(tmp_path, GOOD), {"federation": {"rounds": 5, "clients_per_round": 4}})
    assert (s.name, s.expect, s.injection.count(4), s.overrides) == ("s", "amplified_bias", 2, {"data": {"num_clients": 4}})


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("clients = 2", "clinets = 2", "s.toml: injection.clinets: unknown key"),
        ('kind = "stereotype_text"', 'kind = "poison"', "s.toml: injection.kind = 'poison' is invalid"),
        ('mode = "amplified_bias"', 'mode = "bias"', "s.toml: expect.mode = 'bias' is invalid"),
        ("clients = 2", "clients = 2\nfraction = 0.5", "s.toml: injection: set exactly one of injection.clients"),
        ("num_clients = 4", "num_clients = 4\ncolour = 1", "s.toml: unknown key 'data.colour'"),
        ("start_round = 2", "start_round = 9", "s.toml: injection.start_round: 9 is after the last round (5)"),
        ("clients = 2", "clients = 7", "s.toml: injection.clients: 7 exceeds data.num_clients = 4"),
        ('mode = "amplified_bias"', 'mode = "none"', 'a control (injection.kind = "none") expects mode = "none"'),
        ('description = "test"', "description = 3", "s.toml: scenario.description = 3 is invalid"),
        ("[expect]\nmode = \"amplified_bias\"", "", "s.toml: [expect]: required table is missing"),
        ("start_round = 2", "start_round = [", "s.toml: not valid TOML"),
    ],
)
def test_malformed_file_is_refused_with_file_and_key(tmp_path: Path, old: str, new: str, message: str):
    # Prepare
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    # Execute
    with pytest.raises(UserError) as err:
        parse_scenario(path, {"federation": {"rounds": 5, "clients_per_round": 4}})
    # Assert: one line, naming the file and the key
    text = str(err.value)
    assert message in text, text
    assert str(path) in text and "\n" not in text


def test_folder_refuses_its_first_bad_file_and_skips_underscore_files(tmp_path: Path):
    _write(tmp_path, GOOD, "a.toml")
    _write(tmp_path, "not = [valid", "_suite.toml")  # not a scenario
    good = load_scenarios(tmp_path, {"federation": {"rounds": 5, "clients_per_round": 4}})
    assert [s.name for s in good] == ["a"]
    _write(tmp_path, GOOD.replace("[injection]", "[injection]\nstrength = 2.0"), "b.toml")
    with pytest.raises(UserError, match=r"b\.toml: injection\.strength = 2\.0 is invalid"):
        load_scenarios(tmp_path, {"federation": {"rounds": 5, "clients_per_round": 4}})


def test_unknown_scenario_name_is_refused(tmp_path: Path):
    with pytest.raises(UserError, match="unknown scenario nope"):
        make_plan(tmp_path / "o.json", quick=True, only=["nope"])


def test_the_shipped_suite_tests_every_mode_with_the_same_detection_settings(tmp_path: Path):
    # Execute: both profiles of the shipped folder, every scenario merged and validated
    full = make_plan(tmp_path / "o.json")
    quick = make_plan(tmp_path / "o.json", quick=True)
    # Assert: the full profile has a scenario expecting each mode and at least one benign control
    expected = {s.expect for s in full.scenarios}
    assert set(MODES) <= expected and "none" in expected
    assert {s.expect for s in quick.scenarios} == set(MODES) | {"none"}
    # every run of a profile is monitored with the profile's own privacy and detector settings
    for plan in (full, quick):
        configs = [run_config(plan, s, 0) for s in plan.scenarios]
        assert {c.privacy.target_epsilon for c in configs} == {8.0}
        assert {(c.monitor.detector, c.monitor.drift_k, c.monitor.target_false_alarm_rate) for c in configs} == {
            ("cusum", 1.5, 0.01)}
        assert all(c.monitor.enabled for c in configs)


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ("[monitor]\ndrift_k = 3.0\n", "[monitor] drift_k: detection settings are the suite's"),
        ("[monitor]\ntarget_false_alarm_rate = 0.5\n", "[monitor] target_false_alarm_rate"),
        ("[privacy]\ntarget_epsilon = 100.0\n", "[privacy] target_epsilon"),
    ],
)
def test_a_scenario_cannot_tune_detection(tmp_path: Path, table: str, needle: str):
    path = _write(tmp_path, table + GOOD)
    with pytest.raises(UserError) as err:
        parse_scenario(path, {"federation": {"rounds": 5, "clients_per_round": 4}})
    assert needle in str(err.value) and "_suite.toml" in str(err.value)


def test_a_scenario_may_name_monitor_groups(tmp_path: Path):
    path = _write(tmp_path, '[monitor]\ngroups = ["english", "korean"]\n' + GOOD)
    scenario = parse_scenario(path, {"federation": {"rounds": 5, "clients_per_round": 4}})
    assert scenario.overrides["monitor"]["groups"] == ["english", "korean"]


SUITE = """
[quick]
seeds = 1
{extra}
[quick.config.federation]
rounds = 4
clients_per_round = 4

[quick.config.client]
local_steps = 2
"""


def _suite_dir(tmp_path: Path, name: str, extra: str = "", copies: int = 1, scenario: str = GOOD) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "_suite.toml").write_text(SUITE.format(extra=extra))
    for k in range(copies):
        _write(d, scenario, name=f"s{k}.toml")
    return d


def test_a_profile_start_round_moves_every_onset(tmp_path: Path):
    plan = make_plan(tmp_path / "o.json", quick=True, scenarios_dir=_suite_dir(tmp_path, "a", "start_round = 1"))
    assert [s.injection.start_round for s in plan.scenarios] == [1]  # the file says 2
    plain = make_plan(tmp_path / "p.json", quick=True, scenarios_dir=_suite_dir(tmp_path, "b"))
    assert [s.injection.start_round for s in plain.scenarios] == [2]


def test_a_profile_start_round_after_the_last_round_is_refused(tmp_path: Path):
    with pytest.raises(UserError, match=r"s0\.toml: injection\.start_round: 5 is after the last round \(4\)"):
        make_plan(tmp_path / "o.json", quick=True, scenarios_dir=_suite_dir(tmp_path, "a", "start_round = 5"))


def test_full_profile_is_sized_for_three_hours_by_its_own_estimate(tmp_path: Path):
    from openpfi.bench.silent_plan import expected_seconds

    plan = make_plan(tmp_path / "out.json")
    configs = [run_config(plan, s, seed) for s, seed in plan.runs()]
    assert len(configs) == 3 * len(plan.scenarios)
    assert expected_seconds(plan, configs) <= 3 * 3600


def test_a_folder_without_a_suite_file_is_judged_with_the_shipped_profiles(tmp_path: Path):
    from openpfi.bench.silent_scenarios import load_suite

    shipped = load_suite()
    own = load_suite(tmp_path)
    assert own.full.config == shipped.full.config and own.quick.config == shipped.quick.config
    assert own.quick.seeds == shipped.quick.seeds == 1 and own.quick.start_round == shipped.quick.start_round
    assert shipped.quick.scenarios and own.quick.scenarios == [] and own.full.scenarios == []


def test_positive_controls_stay_out_of_the_coverage_row():
    from openpfi.bench.silent import suite_coverage

    def row(scenario: str, kind: str, expect: str, detected: int) -> dict:
        return {"scenario": scenario, "kind": kind, "expect": expect, "runs": 3, "detected_runs": detected,
                "delays": [0] * detected, "false_alarms": 0, "false_alarm_modes": [],
                "any_alarm_after_onset_runs": detected}

    missed = row("amplified_bias", "stereotype_text", "amplified_bias", 0)
    caught = row("bias_probe_items", "probe_items", "amplified_bias", 3)
    assert suite_coverage([missed, caught])["amplified_bias"] == "none"
    assert suite_coverage([{**caught, "kind": "stereotype_text"}])["amplified_bias"] == "direct"


def test_duration_estimate_scales_by_the_models_measured_cost(tmp_path: Path):
    """The same quick plan with its model renamed: a bundled model's estimate is SmolLM2's times
    its measured relative_cost; a model with no measurement keeps SmolLM2's figure and says so."""
    from openpfi.bench import silent_plan as silent
    from openpfi.bench.silent_run import speed_note
    from openpfi.models.registry import BUNDLED

    plan = make_plan(tmp_path / "out.json", quick=True)
    configs = [run_config(plan, s, seed) for s, seed in plan.runs()]

    def renamed(name: str) -> list:
        return [c.model_copy(update={"model": c.model.model_copy(update={"name": name})}) for c in configs]

    base = silent.expected_seconds(plan, configs)
    qwen = BUNDLED["qwen2.5-coder-0.5b-instruct"].relative_cost
    assert qwen == 2.3 and silent.expected_seconds(plan, renamed("qwen2.5-coder-0.5b-instruct")) == pytest.approx(qwen * base)
    assert silent.expected_seconds(plan, renamed("/models/unknown.gguf")) == pytest.approx(base)
    assert speed_note("smollm2-135m-instruct") == ""
    assert speed_note("qwen2.5-coder-0.5b-instruct") == " (2.3x SmolLM2-135M's time, measured)"
    assert "a larger model takes longer" in speed_note("/models/unknown.gguf")


def test_duration_estimate_counts_round_zero_once_per_start(tmp_path: Path):
    """Two copies of one scenario over two seeds (4 runs, 2 starts): round 0 is scored once per
    seed, so the estimate is 4 single runs less 2 first-start costs (round-0 scoring and setup)."""
    from openpfi.bench import silent_plan as silent

    def plan_for(name: str, copies: int, seeds: int) -> tuple[silent.BenchPlan, list]:
        d = _suite_dir(tmp_path, name, copies=copies)
        plan = make_plan(tmp_path / "out.json", quick=True, scenarios_dir=d, seeds=seeds)
        return plan, [run_config(plan, s, seed) for s, seed in plan.runs()]

    one, one_cfg = plan_for("one", 1, 1)
    four, four_cfg = plan_for("four", 2, 2)
    assert len(four_cfg) == 4 and len({(c.model.adapter, c.seed) for c in four_cfg}) == 2
    server = silent.SERVER_SECONDS_PER_ITEM * sum(one_cfg[0].monitor.server_items.values())
    single = silent.expected_seconds(one, one_cfg)
    first = silent.FIRST_START_SECONDS + server
    assert silent.expected_seconds(four, four_cfg) == pytest.approx(4 * single - 2 * first)
    # resuming with the first run of each seed finished: the two left read round 0 from the cache
    assert [seed for _, seed in four.runs()] == [0, 0, 1, 1]
    assert silent.expected_seconds(four, four_cfg, {0, 2}) == pytest.approx(2 * (single - first))


def test_duration_estimate_counts_the_injected_clients_extra_steps(tmp_path: Path):
    """Same profile, same run, with and without 4x local steps on the 2 injected clients from
    round 2 of 4: the estimate differs by exactly 2 clients x 3 rounds x 6 extra steps x STEP_SECONDS."""
    from openpfi.bench import silent_plan as silent

    def estimate(extra: str) -> float:
        d = _suite_dir(tmp_path, "scaled" if extra else "plain",
                       scenario=GOOD.replace("start_round = 2", f"start_round = 2\n{extra}"))
        plan = make_plan(tmp_path / "out.json", quick=True, scenarios_dir=d)
        configs = [run_config(plan, s, seed) for s, seed in plan.runs()]
        assert [c.federation.rounds for c in configs] == [4] and [c.client.local_steps for c in configs] == [2]
        return silent.expected_seconds(plan, configs)

    assert estimate("steps_scale = 4.0") - estimate("") == pytest.approx(2 * 3 * 6 * silent.STEP_SECONDS)


def test_duration_estimate_counts_the_public_group_texts(tmp_path: Path):
    """Two groups with 16 public texts each: the server scores 32 more items at round 0 and a block of
    them (a third: 3 blocks by default) after each of the 4 rounds. A scenario may name its groups but
    not override the probe size."""
    from openpfi.bench import silent_plan as silent

    def estimate(name: str, groups: str) -> float:
        d = _suite_dir(tmp_path, name, scenario=GOOD.replace("[injection]", f"{groups}[injection]"))
        plan = make_plan(tmp_path / "out.json", quick=True, scenarios_dir=d)
        configs = [run_config(plan, s, seed) for s, seed in plan.runs()]
        return silent.expected_seconds(plan, configs)

    grouped = estimate("g", '[monitor]\ngroups = ["english", "korean"]\n\n')
    assert grouped - estimate("p", "") == pytest.approx((1 + 4 / 3) * 32 * silent.SERVER_SECONDS_PER_ITEM)
    d = _suite_dir(tmp_path, "bad", scenario=GOOD.replace("[injection]", "[monitor]\ngroup_items = 200\n\n[injection]"))
    with pytest.raises(UserError, match="group_items"):
        make_plan(tmp_path / "out.json", quick=True, scenarios_dir=d)


def test_clients_scale_multiplies_the_profiles_federation_unless_the_profile_turns_it_off(tmp_path: Path):
    scaled = GOOD.replace("[data]\nnum_clients = 4\n", "").replace('description = "test"', 'description = "test"\nclients_scale = 3')
    plain = GOOD.replace("[data]\nnum_clients = 4\n", "")
    halved = scaled.replace("clients_scale = 3", "clients_scale = 0.5")
    tiny = scaled.replace("clients_scale = 3", "clients_scale = 0.1")  # floors: 2 clients, 1 per round
    sizes = {}
    for name, extra, text in (("plain", "", plain), ("scaled", "", scaled), ("off", "scale_clients = false", scaled),
                              ("halved", "", halved), ("tiny", "", tiny)):
        plan = make_plan(tmp_path / f"{name}.json", quick=True, scenarios_dir=_suite_dir(tmp_path, name, extra, scenario=text))
        cfg = run_config(plan, plan.scenarios[0], seed=0)
        sizes[name] = (cfg.data.num_clients, cfg.federation.clients_per_round)
    n = sizes["plain"][0]
    assert sizes == {"plain": (n, 4), "scaled": (3 * n, 12), "off": (n, 4), "halved": (n // 2, 2),
                     "tiny": (2, 1)}


@pytest.mark.parametrize("also, message", [
    ('also = ["amplified_bias"]', "expect.also repeats expect.mode"),
    ('also = ["nonsense"]', "also"),
])
def test_expect_also_is_checked(tmp_path: Path, also: str, message: str):
    path = _write(tmp_path, GOOD.replace('mode = "amplified_bias"', f'mode = "amplified_bias"\n{also}'))
    with pytest.raises(UserError, match=message):
        parse_scenario(path, {"federation": {"rounds": 5, "clients_per_round": 4}})


def test_model_replaces_the_profile_model_in_every_run_and_its_hash(tmp_path):
    from openpfi.bench.silent_run import config_sha as _config_sha

    plain = make_plan(tmp_path / "o.json", quick=True)
    other = make_plan(tmp_path / "o.json", quick=True, model="tiny-random")
    for (s, seed), (t, _) in zip(plain.runs(), other.runs(), strict=True):
        a, b = run_config(plain, s, seed), run_config(other, t, seed)
        assert (a.model.name, b.model.name) == ("smollm2-135m-instruct", "tiny-random")
        assert _config_sha(a, s) != _config_sha(b, t)
    with pytest.raises(UserError, match="no hub downloads"):
        make_plan(tmp_path / "o.json", quick=True, model="someone/some-model")
