"""Use what a run trained: export (peft or merged Hugging Face folders) and chat."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from openpfi.cli.common import app, err_console, friendly, setup_env
from openpfi.errors import UserError

RoundOpt = Annotated[int | None, typer.Option("--round", help="Round of the global model (default: the last; 0 = the start).")]
ClientOpt = Annotated[str | None, typer.Option("--client", help="A client id of the run: its personal model.")]
StoreOpt = Annotated[Path | None, typer.Option("--store", help="The client's own store folder, where it is not in "
                                               "the run's <run>.clients/ (e.g. a Flower node's state dir/<id>).")]


@app.command("export")
@friendly
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `openpfi run`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write (must be empty or new).")],
    fmt: Annotated[str, typer.Option("--format", help="peft: adapter folder; merged: full Hugging Face model folder.")] = "peft",
    round_: RoundOpt = None,
    client: ClientOpt = None,
    store: StoreOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out folder.")] = False,
) -> None:
    """Export the global model (or --client's personal model) as a peft folder or a merged model folder."""
    setup_env()
    from openpfi.recipes.export import FORMATS, check_out, export

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    check_out(out, force)
    path = export(run_dir, out, fmt, round_, client, force, store)
    err_console.print(f"exported to [bold]{path}[/]", highlight=False, soft_wrap=True)


def _print_stats(session: Any) -> None:
    s = session.last
    err_console.print(f"[dim]{s.prompt_tokens} prompt tokens, {s.new_tokens} new; first token {s.first_token_s:.2f} s, "
                      f"{s.tokens_per_s:.1f} tokens/s after it[/]", highlight=False, soft_wrap=True)


def _answer(session: Any, text: str, stats: bool, sources: Any = None) -> None:
    for piece in session.reply(text):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if sources is not None:
        err_console.print(f"[dim]{sources.sources()}[/]", highlight=False, soft_wrap=True)
    if stats:
        _print_stats(session)


def _loop(session: Any, stats: bool, sources: Any = None) -> None:
    err_console.print("type a message; /reset forgets the conversation, /exit (or Ctrl-D) ends", highlight=False, soft_wrap=True)
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            sys.stdout.write("\n")
            return
        if text in ("/exit", "/quit", "exit", "quit"):
            return
        if text == "/reset":
            session.reset()
            continue
        if not text:
            continue
        sys.stdout.write("assistant> ")
        try:
            _answer(session, text, stats, sources)
        except KeyboardInterrupt:
            sys.stdout.write("\n[interrupted]\n")


@app.command()
@friendly
def chat(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `openpfi run`.")],
    client: ClientOpt = None,
    store: StoreOpt = None,
    global_: Annotated[bool, typer.Option("--global", help="Chat with the global model (the default).")] = False,
    round_: RoundOpt = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Answer this one message and exit.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Longest reply, in tokens.")] = 128,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 = greedy.")] = 0.7,
    system: Annotated[str, typer.Option("--system", help="A system message (default: the chat template's).")] = "",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampling.")] = 0,
    stats: Annotated[bool, typer.Option("--stats", help="Print first-token latency and tokens/s after each reply.")] = False,
    rag: Annotated[bool, typer.Option("--rag", help="Put passages retrieved from the client's own documents into "
                                      "each prompt (rag.top_k, rag.token_budget of the run's config).")] = False,
    show_sources: Annotated[bool, typer.Option("--show-sources", help="With --rag: name the passages each answer "
                                               "used.")] = False,
) -> None:
    """Chat in the terminal with a run's global model or a client's personal model (streamed replies)."""
    setup_env()
    if client is not None and global_:
        raise UserError("pass either --client ID or --global, not both")
    from openpfi.recipes.chat import open_session

    if show_sources and not rag:
        raise UserError("--show-sources names the passages --rag retrieved; add --rag")
    if rag and client is None:
        raise UserError("--rag retrieves from a client's own documents; pass --client ID (the global model has none)")
    session = open_session(run_dir, client, round_, store, max_new_tokens=max_new_tokens, temperature=temperature,
                           system=system, seed=seed)
    err_console.print(f"[dim]{session.model.choice.what}[/]", highlight=False, soft_wrap=True)
    sources = _with_retrieval(session, run_dir, client, store) if rag else None
    if prompt is not None:
        _answer(session, prompt, stats, sources if show_sources else None)
        return
    _loop(session, stats, sources if show_sources else None)


def _with_retrieval(session: Any, run_dir: Path, client: str, store: Path | None) -> Any:
    """Retrieval over ``client``'s own documents (the run's rag.documents, else its training texts),
    indexed in its store; the session puts the passages into each prompt."""
    from openpfi.assembly.retrieval import chat_retrieval
    from openpfi.config import load_config
    from openpfi.runfolder import RunFolder

    run = RunFolder.open(run_dir)
    folder = Path(store) if store is not None else run.client_dir(client)
    retrieval = chat_retrieval(load_config(run.config_file), client, session.model.shared.loaded.tokenizer, folder)
    session.context_for = retrieval.context_for
    return retrieval
