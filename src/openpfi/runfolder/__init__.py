"""The run folder (DESIGN.md "Runs"): config, manifest, metrics, start adapter, checkpoints.

Every file is written to a temporary name, fsynced and renamed (the folder
fsynced after the rename), so a killed process or a power cut leaves either
the old or the new version. A round is complete when its checkpoint folder
exists; ``metrics.jsonl`` rows past the last complete round are dropped on
resume. Everything read back on resume is checked: a damaged file is a
``UserError`` naming it, never a traceback.

``start/`` (the starting global model) and every ``checkpoints/round-N/`` are peft
adapter folders (``runfolder/adapter.py``). A checkpoint holds the server's global
state (its "own" tensors, read back bit for bit on resume) completed, for loading
with peft, by the starting adapter's tensors the server does not train (FFA-LoRA's
frozen A, see :func:`completion`); a LoRA B that is zero at the start is left out
(peft starts B at zero), so FedSA-LoRA's personal B never appears in a server file.

The run folder is the server's. The clients' own storage (personal state, the secrets of
their monitor noise, their own figures: client/store.py) is a sibling folder,
``<run>.clients/`` (``client_store_dir``), named in manifest.json (``client_store``) and
marked by a ``.openpfi-client-store`` file, so that ``--force`` replaces only a folder an
earlier run made for its clients. The server's own secret (the seed of the DP noise it adds
to the updates and of its client sampling) is kept beside it too, in ``<name>.server/``,
never inside: the run folder may be handed to an auditor.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from openpfi.errors import UserError
from openpfi.runfolder.adapter import (
    A_SUFFIX,
    B_SUFFIX,
    AdapterLayout,
    is_adapter_folder,
    read_adapter_folder,
    write_adapter_files,
    write_adapter_folder,
)

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
START = "start"
LEGACY_ADAPTER = "adapter.safetensors"
CLIENT_STORE_SUFFIX = ".clients"
STORE_MARK = ".openpfi-client-store"


def client_store_dir(run_path: Path) -> Path:
    """The client store of a new run folder: its sibling ``<name>.clients``."""
    p = Path(run_path).resolve()
    return p.parent / f"{p.name}{CLIENT_STORE_SUFFIX}"


def check_client_store(store: Path, force: bool) -> None:
    """Refuse a client-store folder that is in the way: a file, a non-empty folder no run
    made for its clients, or (without ``force``) an earlier run's client store."""
    if store.exists() and not store.is_dir():
        raise UserError(f"{store} (the run's client store) is a file; move it or choose another --out")
    if not store.is_dir() or not any(store.iterdir()):
        return
    if not (store / STORE_MARK).is_file():
        raise UserError(
            f"{store} exists and is not an openpfi client store; move it or choose another --out "
            "(the clients' storage goes next to the run folder)"
        )
    if not force:
        raise UserError(
            f"the client store {store} of an earlier run exists; pass --force to overwrite that run and its "
            "client store, or choose another --out"
        )


def mark_client_store(store: Path) -> Path:
    """Create ``store`` (if needed) with the mark that makes it a folder of client stores."""
    store.mkdir(parents=True, exist_ok=True)
    atomic_write(store / STORE_MARK, "openpfi client store: each client's own folder; the server never reads it\n")
    return store


SECRET_BYTES = 32
SECRET_FILE = "noise-secret.key"


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def secret_file(path: Path, size: int) -> bytes:
    """The bytes of a secret file, made with ``secrets.token_bytes(size)`` (mode 0600, fsynced) if absent.
    Made under a temporary name and hard-linked into place, so two processes never replace each
    other's secret."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(size))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic and never replaces a secret another process wrote first
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()


def atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in sorted(state.items())}, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise UserError(f"{path} is missing; restore it or delete its checkpoint folder to resume earlier") from None
    except Exception as err:  # safetensors raises its own error types on a damaged file
        raise UserError(f"{path} is not a readable safetensors file ({type(err).__name__}); restore it or "
                        "delete its checkpoint folder to resume from the round before") from None


def completion(start: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The starting tensors that complete ``state`` into the model it stands for: those of a module
    whose B is in ``state`` or non-zero at the start (a module whose B stays zero adds nothing, and
    peft starts B at zero)."""
    out = {}
    for k, v in start.items():
        if k in state:
            continue
        module = k.removesuffix(A_SUFFIX).removesuffix(B_SUFFIX)
        b = module + B_SUFFIX
        if b in state or (b in start and bool(start[b].any())):
            out[k] = v
    return out


@dataclass
class Checkpoint:
    round: int
    adapter: dict[str, torch.Tensor]
    server_state: dict[str, torch.Tensor]
    meta: dict[str, Any]


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._start: tuple[AdapterLayout, dict[str, torch.Tensor]] | None = None

    # -- creation -------------------------------------------------------------------------------
    @staticmethod
    def check_target(path: Path, force: bool) -> None:
        """Everything ``create`` refuses, checked without writing (a file, a non-empty folder
        without ``force``, a client store in the way)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise UserError(f"output folder {path} is a file; choose another --out")
        if (path / STORE_MARK).is_file():
            raise UserError(f"{path} is the client store of another run folder; choose another --out")
        if path.is_dir() and any(path.iterdir()) and not force:
            raise UserError(
                f"output folder {path} is not empty; pass --force to overwrite it, "
                "choose another --out, or `openpfi resume` it"
            )
        check_client_store(client_store_dir(path), force)

    @classmethod
    def create(cls, path: Path, force: bool) -> RunFolder:
        """A new run folder; an existing non-empty folder (and its client store) is only
        replaced with ``force``."""
        path = Path(path)
        cls.check_target(path, force)
        if path.is_dir() and any(path.iterdir()):
            shutil.rmtree(path)
        store = client_store_dir(path)
        if store.is_dir():
            shutil.rmtree(store)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        (run.server_dir / SECRET_FILE).unlink(missing_ok=True)  # a new run never reuses an old run's secret
        return run

    @classmethod
    def open(cls, path: Path) -> RunFolder:
        path = Path(path)
        if not (path / "config.toml").is_file():
            raise UserError(f"{path} is not an openpfi run folder (no config.toml); pass the folder `openpfi run` wrote")
        return cls(path)

    # -- files ------------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / "config.toml"

    @property
    def clients_dir(self) -> Path:
        """The clients' storage (``<run>.clients``, or the folder manifest.json names). Never read
        by the server; a recipe hands each in-process client its own folder in it."""
        manifest = self.path / "manifest.json"
        name = json.loads(manifest.read_text()).get("client_store") if manifest.is_file() else None
        sibling = client_store_dir(self.path)
        if name:
            named = self.path.resolve().parent / name
            return named if named.is_dir() or not sibling.is_dir() else sibling  # a renamed pair: its own sibling
        legacy = self.path / "clients"  # run folders written before the client store moved out
        return legacy if legacy.is_dir() else sibling

    @property
    def server_dir(self) -> Path:
        """The server's private folder beside the run folder (``<name>.server``)."""
        return self.path.parent / f"{self.path.name}.server"

    def server_secret(self) -> bytes:
        """32 bytes made once per run (``secrets.token_bytes``) and kept in ``server_dir``, mode 0600."""
        f = self.server_dir / SECRET_FILE
        data = secret_file(f, SECRET_BYTES)
        if len(data) != SECRET_BYTES:
            raise UserError(f"{f} is not a {SECRET_BYTES}-byte secret; restore it (the DP noise of a resumed run "
                            "depends on it)")
        return data

    def client_dir(self, client_id: str) -> Path:
        """The client-side folder (``client.federated.ClientStore``) of one client of this run."""
        return self.clients_dir / client_id

    def write_config(self, text: str) -> None:
        atomic_write(self.config_file, text)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def read_json(self, name: str) -> Any:
        f = self.path / name
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{f} is missing; restore it") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{f} is not valid JSON ({type(err).__name__}); restore it") from None

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        f = self.path / METRICS
        if not f.is_file():
            return []
        rows = []
        for line in f.read_bytes().decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line from a killed process
            if not isinstance(row, dict) or not _is_round(row.get("round")):
                raise UserError(f"{f}: a row without a round number; the file was edited, restore it")
            rows.append(row)
        return rows

    def truncate_metrics(self, last_round: int) -> None:
        rows = [r for r in self.read_metrics() if int(r.get("round", 0)) <= last_round]
        atomic_write(self.path / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    # -- start adapter and checkpoints -----------------------------------------------------------
    def write_start(self, state: dict[str, torch.Tensor], layout: AdapterLayout) -> None:
        """``start/``: the starting adapter (seeded init or ``model.adapter``) as a peft folder; it fixes
        the layout of every checkpoint and completes them with the tensors the server does not train."""
        write_adapter_folder(self.path / START, state, layout, info={"round": 0, "what": "starting adapter"})
        self._start = None

    def has_start(self) -> bool:
        return is_adapter_folder(self.path / START)

    def start_adapter(self) -> tuple[AdapterLayout, dict[str, torch.Tensor]]:
        if self._start is None:
            folder = read_adapter_folder(self.path / START)
            layout = folder.layout
            if layout is None:
                raise UserError(f"{self.path / START} has no openpfi-adapter.json; restore it or rerun the job")
            self._start = (layout, folder.state)
        return self._start

    def save_checkpoint(self, ckpt: Checkpoint) -> Path:
        layout, start = self.start_adapter()
        fill = completion(start, ckpt.adapter)
        root = self.path / CHECKPOINTS
        final = root / f"round-{ckpt.round}"
        tmp = root / f".round-{ckpt.round}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        write_adapter_files(tmp, {**fill, **ckpt.adapter}, layout, own=ckpt.adapter,
                            info={"round": ckpt.round, "what": "global model"})
        if ckpt.server_state:
            _save_tensors(ckpt.server_state, tmp / "server_state.safetensors")
        atomic_write(tmp / "state.json", json.dumps({"round": ckpt.round, **ckpt.meta}, sort_keys=True, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
        return final

    def checkpoint_folder(self, round_num: int) -> Path:
        return self.path / CHECKPOINTS / f"round-{round_num}"

    def completed_rounds(self) -> list[int]:
        root = self.path / CHECKPOINTS
        if not root.is_dir():
            return []
        return sorted(
            int(p.name.split("-", 1)[1])
            for p in root.iterdir()
            if p.is_dir() and p.name.startswith("round-") and p.name[6:].isdigit() and (p / "state.json").is_file()
        )

    def load_checkpoint(self, round_num: int) -> Checkpoint:
        """The server's state of a round, bit for bit as it was saved."""
        folder = self.checkpoint_folder(round_num)
        try:
            meta = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{folder / 'state.json'} is unreadable ({type(err).__name__}); restore it or delete "
                            f"{folder} to resume from the round before") from None
        if not isinstance(meta, dict) or meta.get("round") != round_num:
            raise UserError(f"{folder / 'state.json'} does not describe round {round_num}; restore it or delete {folder}")
        server_file = folder / "server_state.safetensors"
        server_state = _load_tensors(server_file) if server_file.is_file() else {}
        if (folder / LEGACY_ADAPTER).is_file():  # run folders written before checkpoints were peft folders
            return Checkpoint(round_num, _load_tensors(folder / LEGACY_ADAPTER), server_state, meta)
        try:
            own = read_adapter_folder(folder).own
        except UserError:
            raise
        except Exception as err:  # safetensors raises its own error types on a damaged file
            raise UserError(f"{folder} is not a readable adapter folder ({type(err).__name__}); restore it or "
                            "delete it to resume from the round before") from None
        return Checkpoint(round_num, own, server_state, meta)


def _is_round(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
