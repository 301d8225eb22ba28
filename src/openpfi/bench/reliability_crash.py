"""SIGKILL at random moments of a run, then ``openpfi resume``: does it resume, and bit-identically?

Each trial runs ``openpfi run`` on a small tiny-random config that touches every file a run
writes (monitor on: its state, privacy.json and audit entries; int8 compression: the clients'
residuals; FedAdam: the server optimizer's state), kills it with SIGKILL at a moment
drawn uniformly over the run (from the moment its run folder exists to the moment an
uninterrupted run ends: training, aggregation, checkpoint writing, audit appends), runs
``openpfi resume`` on the folder, and compares every ``.safetensors`` of the final checkpoint
with those of an uninterrupted run, byte for byte. A moment drawn after the run has ended, or after
its last round's checkpoint (while it writes its report: nothing is left to resume), is drawn again.

DP noise on the updates is left out here: it is drawn from a secret each new run makes afresh, so
two runs never match; a resumed DP run reuses its run's secret (strategies/update_privacy.py).

Each run and resume is a process of its own: forked from this process after the imports
(``fork``), running the recipes ``openpfi run`` / ``openpfi resume`` call (recipes/dispatch.py),
so a trial costs the run's work and not the interpreter's start; or the openpfi command line in
a fresh interpreter (``subprocess``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openpfi.errors import UserError

ROUNDS = 4
"""Rounds of every crash run (``federation.rounds`` in ``SETS``)."""
SETS = (
    "model.name=tiny-random", "data.num_clients=3", "federation.clients_per_round=3", f"federation.rounds={ROUNDS}",
    "client.local_steps=3", "client.max_length=48", "client.batch_size=2", "data.min_examples=10",
    "data.max_examples=30", "client.max_eval_examples=4", "federation.compression=int8",
    "federation.strategy=fedadam", "federation.server_lr=0.01",
)


def _args(command: str, folder: Path, config: Path, extra: tuple[str, ...] = ()) -> list[str]:
    if command == "resume":
        return ["resume", str(folder), "--quiet"]
    sets = [x for s in (*SETS, *extra) for x in ("--set", s)]
    return ["run", str(config), "--out", str(folder), "--quiet", "--force", *sets]


def _start(args: list[str], how: str, log: Path) -> int:
    """Start the openpfi CLI with ``args``; return its pid."""
    if how == "subprocess":
        out = open(log, "wb")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen([sys.executable, "-m", "openpfi.cli", *args], stdout=out, stderr=subprocess.STDOUT)
        return proc.pid
    pid = os.fork()
    if pid == 0:  # the child: the CLI, then exit without running the parent's cleanup
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            _command(args)
            code = 0
        except UserError as e:
            print(f"error: {e}")
            code = 2
        except BaseException:  # noqa: B036 (the child reports through its exit code and log)
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _command(args: list[str]) -> None:
    """What ``openpfi run`` / ``openpfi resume`` do (cli/runs.py), from the same recipes."""
    from openpfi.engines.inprocess import SilentReporter
    from openpfi.recipes.dispatch import resume_job, start_job

    if args[0] == "resume":
        resume_job(Path(args[1]), SilentReporter())
        return
    from openpfi.config import load_config

    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    start_job(load_config(args[1], sets), Path(args[args.index("--out") + 1]), True, SilentReporter())


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _final(folder: Path, rounds: int) -> dict[str, bytes]:
    ckpt = folder / "checkpoints" / f"round-{rounds}"
    return {f.name: f.read_bytes() for f in sorted(ckpt.glob("*.safetensors"))} if ckpt.is_dir() else {}


@dataclass
class Reference:
    final: dict[str, bytes]
    window: float
    """Seconds from the run folder's creation to the end of an uninterrupted run."""


def reference_run(root: Path, config: Path, how: str, extra: tuple[str, ...] = ()) -> Reference:
    folder = root / "reference"
    shutil.rmtree(folder, ignore_errors=True)
    pid = _start(_args("run", folder, config, extra), how, root / "reference.log")
    t_folder = _poll_folder(folder, pid)
    code = _wait(pid)
    end = time.perf_counter()
    if code != 0:
        raise RuntimeError(f"the uninterrupted run failed (exit {code}); see {root / 'reference.log'}")
    return Reference(_final(folder, ROUNDS), end - t_folder)


def _poll_folder(folder: Path, pid: int) -> float:
    while not (folder / "config.toml").is_file():
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            raise RuntimeError("the run ended before it wrote its run folder")
        time.sleep(0.01)
    return time.perf_counter()


def crash_trials(root: Path, config: Path, trials: int, seed: int = 0, how: str = "fork",
                 extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """``trials`` runs killed and resumed; ``extra``: --set overrides after ``SETS``."""
    root.mkdir(parents=True, exist_ok=True)
    ref = reference_run(root, config, how, extra)
    rng = np.random.default_rng(seed)
    tried = identical = resumed = 0
    completed_at_kill: dict[str, int] = {}
    failures: list[str] = []
    attempts = 0
    t0 = time.perf_counter()
    while tried < trials and attempts < 3 * trials:
        attempts += 1
        folder = root / "trial"
        shutil.rmtree(folder, ignore_errors=True)
        pid = _start(_args("run", folder, config, extra), how, root / "trial-run.log")
        delay = float(rng.uniform(0.0, ref.window))
        try:
            start = _poll_folder(folder, pid)
        except RuntimeError:  # it ended (and was reaped) before it wrote its run folder
            continue
        ended = False
        while time.perf_counter() < start + delay:
            ended = os.waitpid(pid, os.WNOHANG)[0] != 0  # reaped here when it has ended
            if ended:
                break
            time.sleep(0.005)
        else:
            os.kill(pid, signal.SIGKILL)
            _wait(pid)
            n = len(list((folder / "checkpoints").glob("round-*/state.json")))
            if n >= ROUNDS:  # killed after its last round (writing the report): nothing to resume, draw again
                continue
            tried += 1
            completed_at_kill[str(n)] = completed_at_kill.get(str(n), 0) + 1
            code = _wait(_start(_args("resume", folder, config), how, root / "trial-resume.log"))
            if code == 0:
                resumed += 1
                if _final(folder, ROUNDS) == ref.final:
                    identical += 1
                else:
                    failures.append(f"trial {tried}: resumed but the final checkpoint differs")
            else:
                log = (root / "trial-resume.log").read_text(errors="replace").strip().splitlines()
                failures.append(f"trial {tried}: resume exit {code}: {log[-1] if log else ''}"[:300])
            continue
        if not ended:
            _wait(pid)
        # the run ended before the drawn moment: not a crash, draw again
    return {
        "resumes_tried": tried,
        "resumes_completed": resumed,
        "resumes_bit_identical": identical,
        "crash_window_s": ref.window,
        "crash_checkpoints_at_kill": dict(sorted(completed_at_kill.items())),
        "crash_failures": failures[:10],
        "crash_seconds": time.perf_counter() - t0,
        "crash_process": how,
        "crash_config": [*SETS, *extra],
    }
