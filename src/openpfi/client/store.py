"""A client's own storage: personal state, the secret of its monitor noise, its own figures.

The server never reads it. For ``openpfi run`` the stores of all clients sit in a folder next to
the server's run folder, ``<run>.clients/<client id>/`` (``runfolder.client_store_dir``, named in
the run's manifest.json), so handing over the run folder hands over nothing of a client; on
Flower each SuperNode keeps its own in its state dir (``state-dir`` in the node config).

    personal-round-N/              the client's personal model after its round-N training (the two
                                   newest rounds): a peft adapter folder (runfolder/adapter.py) whose
                                   own tensors (restored on resume) are the client's personal state,
                                   completed by the global parts it received that round (FedSA-LoRA's
                                   A, FedRep's shared layers, merged deltas)
    residual-round-N.safetensors   what compression dropped from its last uploads (error feedback,
                                   client/uplink.py; the two newest)
    monitor-secret.key             32 random bytes seeding the client's monitor noise (mode 0600)
    figures.json                   the client's own figures per round (held-out loss of the model it
                                   was sent and of its own model, train loss, tokens/s): what a
                                   simulation shows per client; they never cross to the server
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from openpfi.algorithms.state import StateDict
from openpfi.errors import UserError
from openpfi.runfolder import STORE_MARK, mark_client_store, secret_file
from openpfi.runfolder.adapter import AdapterLayout, is_adapter_folder, read_adapter_folder, write_adapter_folder

SECRET_BYTES = 32
SECRET_FILE = "monitor-secret.key"
FIGURES_FILE = "figures.json"
PERSONAL_PREFIX = "personal-round-"
RESIDUAL_PREFIX = "residual-round-"


def new_secret() -> bytes:
    """Fresh secret entropy for one client (``secrets.token_bytes``; never derived from the run seed)."""
    return secrets.token_bytes(SECRET_BYTES)


class ClientStore:
    """The client-side folder of one client (see the module docstring)."""

    def __init__(self, folder: Path, keep: int = 2):
        self.folder = Path(folder)
        self.keep = keep
        """How many rounds of personal adapters to keep (0 = every round)."""

    def _ensure(self) -> None:
        """Create the folder; its parent (the store of all clients) carries the client-store mark."""
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            if not (self.folder.parent / STORE_MARK).is_file():
                mark_client_store(self.folder.parent)

    # -- personal state ---------------------------------------------------------------------------
    def save(self, round_num: int, personal: StateDict, model: StateDict, layout: AdapterLayout,
             client_id: str = "") -> None:
        """Keep ``personal`` (the own state) inside the peft folder of the whole personal ``model``."""
        self._ensure()
        info = {"round": round_num, "client": client_id, "what": "personal model"}
        write_adapter_folder(self.folder / f"{PERSONAL_PREFIX}{round_num}", {**model, **personal}, layout,
                             own=personal, info=info)
        # Keep the newest versions: a resume from the previous round must still find its state,
        # however many rounds ago this client last saved.
        if self.keep > 0:
            for _, old in self.saved()[: -self.keep]:
                shutil.rmtree(old)

    def saved(self) -> list[tuple[int, Path]]:
        """(round, folder) of every personal adapter kept, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for f in self.folder.iterdir():
            tail = f.name.removeprefix(PERSONAL_PREFIX)
            if f.name.startswith(PERSONAL_PREFIX) and tail.isdigit() and is_adapter_folder(f):
                found.append((int(tail), f))
        return sorted(found)

    def newest(self, up_to_round: int) -> tuple[int, Path] | None:
        """The newest personal adapter folder saved at or before ``up_to_round``."""
        older = [(n, f) for n, f in self.saved() if n <= up_to_round]
        return older[-1] if older else None

    def load(self, up_to_round: int) -> StateDict | None:
        """The newest personal state saved at or before ``up_to_round``."""
        found = self.newest(up_to_round)
        return None if found is None else read_adapter_folder(found[1]).own

    # -- compression residuals ----------------------------------------------------------------------
    def save_residual(self, round_num: int, state: StateDict) -> None:
        """Keep what compression dropped from this round's upload (client/uplink.py): written to a
        temporary name, fsynced, renamed; the two newest kept."""
        self._ensure()
        tmp = self.folder / f".{RESIDUAL_PREFIX}{round_num}.tmp"
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(self.folder / f"{RESIDUAL_PREFIX}{round_num}.safetensors")
        for _, old in self._residuals()[:-2]:
            old.unlink()

    def _residuals(self) -> list[tuple[int, Path]]:
        found = []
        for f in self.folder.glob(f"{RESIDUAL_PREFIX}*.safetensors"):
            tail = f.stem.removeprefix(RESIDUAL_PREFIX)
            if tail.isdigit():
                found.append((int(tail), f))
        return sorted(found)

    def load_residual(self, up_to_round: int) -> StateDict | None:
        """The newest compression residual saved at or before ``up_to_round``."""
        older = [(n, f) for n, f in self._residuals() if n <= up_to_round]
        if not older:
            return None
        try:
            return load_file(str(older[-1][1]))
        except Exception as err:  # safetensors raises its own error types on a damaged file
            raise UserError(f"{older[-1][1]} is not a readable safetensors file ({type(err).__name__}); restore it "
                            "from a backup or delete it (error feedback starts afresh)") from None

    # -- the monitor secret -----------------------------------------------------------------------
    def secret(self) -> bytes:
        """This client's 32-byte secret: made with ``secrets.token_bytes`` on first use and kept in this
        folder (``monitor-secret.key``, mode 0600; ``runfolder.secret_file``), so a resumed run draws the
        same monitor noise. It never leaves the client: nothing sent to the server or written by it
        derives from it except the noised reports and updates."""
        path = self.folder / SECRET_FILE
        if not path.is_file():
            self._ensure()
        data = secret_file(path, SECRET_BYTES)
        if len(data) != SECRET_BYTES:
            raise UserError(
                f"{path} is not a {SECRET_BYTES}-byte client secret; restore it from a backup, or delete it "
                "to start a new one (this client's monitor noise then differs from the original run)"
            )
        return data

    # -- the client's own figures -----------------------------------------------------------------
    def record(self, round_num: int, figures: Mapping[str, float]) -> None:
        """Merge ``figures`` into this round's entry of ``figures.json`` (written atomically; a
        round run again, after a resume, overwrites what it wrote before)."""
        rounds = self.figures()
        rounds[int(round_num)] = {**rounds.get(int(round_num), {}), **{k: float(v) for k, v in figures.items()}}
        self._ensure()
        tmp = self.folder / f".{FIGURES_FILE}.tmp"
        text = json.dumps({str(r): _finite(f) for r, f in sorted(rounds.items())}, sort_keys=True, indent=1)
        tmp.write_text(text + "\n")
        tmp.replace(self.folder / FIGURES_FILE)

    def figures(self) -> dict[int, dict[str, float]]:
        """Round -> this client's own figures of that round ({} before any)."""
        path = self.folder / FIGURES_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}  # a figure file torn by a crash: the client's own view only, nothing depends on it
        return {int(r): {k: (float("nan") if v is None else float(v)) for k, v in f.items()} for r, f in data.items()}


def _finite(figures: Mapping[str, float]) -> dict[str, Any]:
    return {k: (v if math.isfinite(v) else None) for k, v in figures.items()}


def client_figures(root: Path, up_to_round: int | None = None) -> dict[str, dict[int, dict[str, float]]]:
    """Client id -> round -> figures, from every client store under ``root`` (the simulation's view:
    each client's own figures; the server never has them). Rounds after ``up_to_round`` are left out."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    if not Path(root).is_dir():
        return out
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        rounds = ClientStore(folder).figures()
        if up_to_round is not None:
            rounds = {r: f for r, f in rounds.items() if r <= up_to_round}
        if rounds:
            out[folder.name] = rounds
    return out


def worst_figure(root: Path, round_num: int, key: str = "eval_loss") -> float | None:
    """The largest ``key`` among the clients' own figures of round ``round_num`` (None without any)."""
    values = [f[round_num][key] for f in client_figures(root, round_num).values() if key in f.get(round_num, {})]
    return max(values) if values else None
