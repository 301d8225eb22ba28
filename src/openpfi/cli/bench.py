"""Benchmarks: each prints a table and writes JSON (never timed tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from openpfi.cli.common import bench_app, console, friendly, setup_env
from openpfi.errors import UserError


@bench_app.command("train")
@friendly
def bench_train(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here.")] = Path("bench-train.json"),
    model: Annotated[str, typer.Option(help="Model to benchmark.")] = "smollm2-135m-instruct",
    steps: Annotated[int, typer.Option(min=1, help="Timed steps per loop.")] = 6,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    trl: Annotated[bool, typer.Option("--trl/--no-trl", help="Also time TRL's SFTTrainer (bf16=True).")] = True,
) -> None:
    """Tokens/s of one client's LoRA step vs the matmul ceilings, a plain HF+peft fp32 loop and TRL's SFTTrainer."""
    setup_env()
    from openpfi.bench.train import run_train_bench

    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: choose cpu or cuda")
    run_train_bench(out, model=model, steps=steps, console=console, device=device, trl=trl)


@bench_app.command("round")
@friendly
def bench_round(
    out: Annotated[Path, typer.Option("--out")] = Path("bench-round.json"),
    model: Annotated[str, typer.Option()] = "smollm2-135m-instruct",
    clients: Annotated[int, typer.Option(min=1, help="Clients in the timed round (the demo samples 8).")] = 8,
    memory_clients: Annotated[int, typer.Option(min=1, help="Simulated clients for the memory figure.")] = 64,
    engine: Annotated[str, typer.Option(help="inprocess | flower")] = "inprocess",
    clients_per_round: Annotated[int | None, typer.Option(min=1, help=(
        "Sample this many of --clients per round (e.g. --clients 1315 --clients-per-round 16: every chitchat "
        "sender a client): memory and per-round overhead of that federation; with --engine flower, as virtual "
        "clients on Flower's simulation runtime."))] = None,
) -> None:
    """A round's wall time split into train / aggregate / evaluate / monitor / serialization; memory."""
    setup_env()
    from openpfi.bench.round import run_round_bench

    run_round_bench(out, model=model, clients=clients, memory_clients=memory_clients, engine=engine, console=console,
                    clients_per_round=clients_per_round)


@bench_app.command("silent")
@friendly
def bench_silent(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here; runs go to <stem>.runs/ beside it.")] = Path(
        "bench-silent.json"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Reduced suite: fewer clients, rounds and seeds (~10 min).")] = False,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Seeds per scenario (default: the profile's).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip the scenario x seed runs already finished.")] = False,
    scenarios: Annotated[Path | None, typer.Option("--scenarios", help="Folder of scenario files.")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this scenario (repeatable).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model for every run (default: the profile's, "
                                              "the bundled SmolLM2-135M-Instruct).")] = None,
) -> None:
    """Silent-failure benchmark: injected failures with ground truth, benign controls, coverage of the six modes."""
    setup_env()
    from openpfi.bench.silent import run_silent_bench

    run_silent_bench(out, quick=quick, seeds=seeds, resume=resume, scenarios_dir=scenarios, only=only or [],
                     model=model, console=console)


@bench_app.command("personalize")
@friendly
def bench_personalize(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here (PNG beside it; runs in <stem>.runs/).")] = Path(
        "bench-personalize.json"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Reduced plan: 1 seed, 2 rounds x 2 steps (about 13 min).")] = False,
    model: Annotated[str, typer.Option(help="Model to personalize.")] = "smollm2-135m-instruct",
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these methods (repeatable).")] = None,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", help="Run only these data sets (repeatable).")] = None,
) -> None:
    """Every personalization method and LoRA aggregation on chitchat and shakespeare (and four on the retrieval
    set memory): per-client loss without and with retrieval, bytes, time."""
    setup_env()
    from openpfi.bench.personalize import run_personalize_bench

    run_personalize_bench(out, quick=quick, model=model, only=only or (), console=console, datasets=dataset or ())


@bench_app.command("align")
@friendly
def bench_align(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here (and the Pareto PNG beside it).")] = Path(
        "bench-align.json"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Reduced plan: 3 preference vectors, 1 seed (<= 10 min).")] = False,
    model: Annotated[str, typer.Option(help="Model to align.")] = "smollm2-135m-instruct",
    docs: Annotated[Path | None, typer.Option("--docs", help="Also write the run's docs section (align-*.md) + the PNG into this folder.")] = None,
    objectives: Annotated[int, typer.Option("--objectives", help="2: harmless, helpful; 3: + honest.")] = 2,
) -> None:
    """FIRM vs linear scalarization, FMGDA and DPO: Pareto front over p, hypervolume, bytes, drift."""
    setup_env()
    from openpfi.bench.align import plan_for, run_align_bench

    plan = plan_for(quick, objectives)  # a bad --objectives fails here, before the model loads
    run_align_bench(out, quick=quick, console=console, model=model, docs=docs, plan=plan)



@bench_app.command("reliability")
@friendly
def bench_reliability(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here.")] = Path("bench-reliability.json"),
    quick: Annotated[bool, typer.Option("--quick", help="10 fault rounds, 10 crashes, 60 cases per fuzz target.")] = False,
) -> None:
    """Faulty clients, SIGKILL crash-resumes and hostile input on tiny-random: rounds, resumes, fuzz cases."""
    setup_env()
    from openpfi.bench.reliability import run_reliability_bench

    run_reliability_bench(out, quick=quick, console=console)


@bench_app.command("robust")
@friendly
def bench_robust(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here (runs in <stem>.runs/).")] = Path("bench-robust.json"),
    config: Annotated[Path, typer.Option("--config", help="The federation (default: the demo's).")] = Path("examples/demo.toml"),
    quick: Annotated[bool, typer.Option("--quick", help="tiny-random, 2 rounds x 1 step (a minute).")] = False,
    model: Annotated[str | None, typer.Option(help="Model for every run (default: the config's).")] = None,
) -> None:
    """Each federation.aggregator clean and with 2 of 8 clients sending scaled or sign-flipped updates."""
    setup_env()
    from openpfi.bench.trust import run_robust_bench

    run_robust_bench(out, config, quick=quick, console=console, model=model)


@bench_app.command("compress")
@friendly
def bench_compress(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here (PNG beside it).")] = Path("bench-compress.json"),
    config: Annotated[Path, typer.Option("--config", help="The federation (default: the demo's).")] = Path("examples/demo.toml"),
    quick: Annotated[bool, typer.Option("--quick", help="tiny-random, 2 rounds x 1 step (a minute).")] = False,
    model: Annotated[str | None, typer.Option(help="Model for every run (default: the config's).")] = None,
) -> None:
    """Held-out loss against bytes up per round for each federation.compression, with a plot."""
    setup_env()
    from openpfi.bench.trust import run_compress_bench

    run_compress_bench(out, config, quick=quick, console=console, model=model)

@bench_app.command("use")
@friendly
def bench_use(
    out: Annotated[Path, typer.Option("--out", help="Write the JSON here; the small run goes to <stem>.runs/.")] = Path(
        "bench-use.json"
    ),
    model: Annotated[str, typer.Option(help="Model of the small run.")] = "smollm2-135m-instruct",
    max_new_tokens: Annotated[int, typer.Option(min=2, help="Longest reply in the chat timing.")] = 48,
) -> None:
    """Export round trip (peft / merged vs openpfi logits) and chat first-token latency and tokens/s."""
    setup_env()
    from openpfi.bench.use import run_use_bench

    run_use_bench(out, model=model, max_new_tokens=max_new_tokens, console=console)
