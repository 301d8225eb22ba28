"""Hostile input, property-based (hypothesis): every reader of outside bytes refuses cleanly or succeeds.

Targets (each case one generated input):

- ``config``: TOML files (generated tables of known and unknown keys, any text, any bytes) -> ``load_config``;
- ``set``: ``--set`` lists -> ``load_config(None, overrides)``;
- ``jsonl``: JSONL files (generated rows, broken lines, bytes) -> ``load_examples("jsonl")``;
- ``resume``: a resumable run folder with one of its files truncated, bit-flipped, replaced,
  deleted or extended -> ``read_resume_state`` and opening its audit log (what ``openpfi resume``
  reads before it trains);
- ``updates``: client updates with any keys, shapes, dtypes and values, under every compression
  -> ``FedServer.screen_fit`` then ``aggregate_fit``; the valid ones must be finite and within
  the norm bound.

A case passes when it returns or raises ``UserError`` (one clear line); any other exception is a
traceback, a case running past ``CASE_SECONDS`` a hang, a broken invariant a violation.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from openpfi.engines.timeout import ClientTimeout, time_limit
from openpfi.errors import UserError

CASE_SECONDS = 20.0
SECTIONS = ("federation", "client", "privacy", "data", "model", "lora", "monitor", "flower", "output", "bogus")
KEYS = ("rounds", "aggregator", "trim_fraction", "compression", "update_clip", "update_noise_multiplier",
        "update_target_epsilon", "clients_per_round", "num_clients", "byzantine_clients", "max_update_norm",
        "secagg", "name", "timeout_s", "topk_fraction", "delta", "x")


@dataclass
class FuzzTally:
    cases: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    tracebacks: list[dict[str, str]] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    violations: list[dict[str, str]] = field(default_factory=list)

    def run(self, target: str, case: Callable[[], Any]) -> None:
        self.cases[target] = self.cases.get(target, 0) + 1
        try:
            with time_limit(CASE_SECONDS):
                case()
        except UserError:
            self.refused[target] = self.refused.get(target, 0) + 1
        except ClientTimeout:
            self.hangs.append(target)
        except AssertionError as err:
            self.violations.append({"target": target, "what": str(err)[:300]})
        except Exception as err:  # the defect this campaign looks for
            self.tracebacks.append({"target": target, "error": f"{type(err).__name__}: {err}"[:300],
                                    "where": traceback.format_exc(limit=-2)[-600:]})


def _values() -> Any:
    from hypothesis import strategies as st

    return st.one_of(st.integers(-10**6, 10**9), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                     st.booleans(), st.lists(st.integers(-5, 50), max_size=4), st.sampled_from(
                         ["median", "krum", "multi_krum", "trimmed_mean", "int8", "topk", "fp16", "updates",
                          "tiny-random", "mean", "none"]))


def fuzz_config(tally: FuzzTally, folder: Path, n: int, seed: int) -> None:
    import tomli_w
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from openpfi.config import load_config

    tables = st.dictionaries(st.sampled_from(SECTIONS), st.dictionaries(st.sampled_from(KEYS), _values(), max_size=4),
                             max_size=4)
    raw = st.one_of(tables.map(lambda t: tomli_w.dumps(t).encode()), st.text(max_size=200).map(str.encode),
                    st.binary(max_size=200))

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(raw)
    def case(data: bytes) -> None:
        path = folder / "fuzz.toml"
        path.write_bytes(data)
        tally.run("config", lambda: load_config(path))

    case()


def fuzz_set(tally: FuzzTally, n: int, seed: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from openpfi.config import load_config

    item = st.one_of(
        st.builds(lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(SECTIONS), st.sampled_from(KEYS),
                  st.one_of(st.text(max_size=15), _values().map(json.dumps))),
        st.text(max_size=40),
    )

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(item, max_size=5))
    def case(overrides: list[str]) -> None:
        tally.run("set", lambda: load_config(None, overrides))

    case()


def fuzz_jsonl(tally: FuzzTally, folder: Path, n: int, seed: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from openpfi.data import load_examples

    row = st.dictionaries(st.sampled_from(["prompt", "response", "client", "label", "x"]),
                          st.one_of(st.text(max_size=30), st.integers(), st.none(), st.lists(st.text(max_size=5))),
                          max_size=5).map(lambda d: json.dumps(d).encode())
    line = st.one_of(row, row, st.text(max_size=40).map(str.encode), st.binary(max_size=40))

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(line, max_size=8), st.booleans())
    def case(lines: list[bytes], strict: bool) -> None:
        path = folder / "fuzz.jsonl"
        path.write_bytes(b"\n".join(lines))
        tally.run("jsonl", lambda: load_examples("jsonl", path=str(path), strict=strict))

    case()


RESUME_FILES = ("config.toml", "metrics.jsonl", "audit.jsonl", "audit.head", "privacy.json",
                "checkpoints/round-2/state.json", "checkpoints/round-2/adapter_model.safetensors",
                "checkpoints/round-1/state.json", "checkpoints/round-2/server_state.safetensors")


def _mutate(path: Path, how: str, pos: float, junk: bytes) -> None:
    if how == "delete":
        path.unlink(missing_ok=True)
        return
    data = path.read_bytes() if path.is_file() else b""
    at = int(pos * len(data))
    if how == "truncate":
        data = data[:at]
    elif how == "flip" and data:
        data = data[:at] + bytes([data[min(at, len(data) - 1)] ^ 0x5A]) + data[at + 1:]
    elif how == "replace":
        data = junk
    elif how == "insert":
        data = data[:at] + junk + data[at:]
    path.write_bytes(data)


def fuzz_resume(tally: FuzzTally, base: Path, folder: Path, n: int, seed: int) -> None:
    """``base``: a run folder resumable from round 2 (rounds 1 and 2 complete)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from openpfi.assembly.resume_state import read_resume_state
    from openpfi.monitor.audit import AuditLog

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(RESUME_FILES), st.sampled_from(["truncate", "flip", "replace", "delete", "insert"]),
           st.floats(0, 1), st.binary(max_size=64))
    def case(name: str, how: str, pos: float, junk: bytes) -> None:
        run = folder / "run"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run)
        _mutate(run / name, how, pos, junk)

        def read() -> None:
            read_resume_state(run)
            AuditLog(run / "audit.jsonl")

        tally.run("resume", read)

    case()


PARAMS = {"m.lora_A.weight": (2, 3), "m.lora_B.weight": (4, 2)}
DTYPES = (torch.float32, torch.float32, torch.float64, torch.float16, torch.int8, torch.int32, torch.bool)


def _tensor(shape: tuple[int, ...], dtype: torch.dtype, fill: float, first: float) -> torch.Tensor:
    """A tensor of ``fill`` with its first entry ``first`` (integer dtypes: clamped into -100..100)."""
    t = torch.full(shape, fill, dtype=torch.float64)
    if t.numel():
        t.view(-1)[0] = first
    if not dtype.is_floating_point:
        t = torch.nan_to_num(t, nan=0.0, posinf=100.0, neginf=-100.0).clamp(-100, 100).round()
    return t.to(dtype)


def fuzz_updates(tally: FuzzTally, n: int, seed: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from openpfi.algorithms.server_opt import ServerOptConfig
    from openpfi.client.messages import ClientUpdate
    from openpfi.strategies.robust import RobustRule
    from openpfi.strategies.screening import ScreenRules, norm_bound
    from openpfi.strategies.server import FedServer, SamplingConfig

    keys = list(PARAMS) + [k + s for k in PARAMS for s in ("::scale", "::values", "::indices")] + ["x"]
    shape = st.one_of(st.sampled_from(list(PARAMS.values())), st.lists(st.integers(0, 5), max_size=3).map(tuple))
    value = st.one_of(st.floats(-1e3, 1e3), st.sampled_from([math.nan, math.inf, -math.inf, 1e30, 0.0]))
    tensor = st.builds(_tensor, shape, st.sampled_from(DTYPES), value, value)
    update = st.builds(lambda cid, n_ex, delta: ClientUpdate(cid, n_ex, delta, {"train_loss": 1.0}),
                       st.sampled_from(["a", "b", "c"]), st.integers(-3, 5000),
                       st.dictionaries(st.sampled_from(keys), tensor, max_size=5))

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(update, max_size=4), st.sampled_from(["none", "fp16", "int8", "topk"]),
           st.sampled_from(["mean", "median", "trimmed_mean", "multi_krum"]))
    def case(updates: list[Any], kind: str, rule: str) -> None:
        rules = ScreenRules(compression=kind, topk_fraction=0.5, max_update_norm=100.0, max_examples=1000)
        server = FedServer(ServerOptConfig("fedavg"), SamplingConfig(4, 1, 0), rules=rules,
                           robust=RobustRule(rule, 0.25, 0))
        server.init({k: torch.zeros(s) for k, s in PARAMS.items()})

        def screen() -> None:
            valid, _ = server.screen_fit(1, updates)
            for u in valid:
                for t in u.delta.values():
                    assert bool(torch.isfinite(t).all()), "a non-finite update passed validation"
                total = math.sqrt(sum(float((t.double() ** 2).sum()) for t in u.delta.values()))
                assert total <= norm_bound(rules, 14), "an update beyond the norm bound passed validation"
            if len(valid) >= server.robust.min_updates():
                server.aggregate_fit(1, valid)
                assert all(bool(torch.isfinite(t).all()) for t in server.params.values()), "the aggregate is not finite"

        tally.run("updates", screen)

    case()


def run_fuzz(base_run: Path, per_target: int, seed: int = 0) -> FuzzTally:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        raise UserError("bench reliability's hostile-input part needs hypothesis: pip install 'openpfi[dev]'") from None
    tally = FuzzTally()
    with tempfile.TemporaryDirectory(prefix="openpfi-fuzz-") as tmp:
        folder = Path(tmp)
        fuzz_config(tally, folder, per_target, seed)
        fuzz_set(tally, per_target, seed)
        fuzz_jsonl(tally, folder, per_target, seed)
        fuzz_resume(tally, base_run, folder, per_target, seed)
        fuzz_updates(tally, per_target, seed)
    return tally
