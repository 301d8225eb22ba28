"""What a client does to its update before it leaves: DP clipping and noise, then compression.

Client-side middleware (as Flower's mods): both engines call :meth:`Uplink.apply` on the
``ClientUpdate`` a client's ``fit`` returned, on the client's side of the boundary::

    delta --(DP, distributed / local)--> clip_C(delta) + N(0, s^2 I) --(compression)--> payload

- DP (strategies/update_privacy.py for the maths): with ``distributed`` noise each of the ``n``
  sampled clients adds its share ``s = z C / sqrt(n)`` (summed under SecAgg+); with ``local``
  noise (robust aggregators) it adds all of ``s = z C``; with ``central`` noise the client adds
  nothing (the server clips and noises the sum). The noise is drawn from the client's secret
  (``ClientStore.secret``) and the round, never from the config's seed.
- Compression (algorithms/wire.py) with error feedback: the residual ``e`` of what compression
  dropped is kept in the client's store (``residual-round-N.safetensors``, the two newest kept) and
  added to the next round's delta, so a resumed run sends the same bytes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from openpfi.algorithms.privacy import add_gaussian_noise, clip_l2
from openpfi.algorithms.state import StateDict
from openpfi.algorithms.wire import encode_with_feedback
from openpfi.client.federated import derive_seed
from openpfi.client.messages import ClientUpdate


class _Client(Protocol):
    store: Any

    def secret(self) -> bytes: ...


@dataclass(frozen=True)
class Uplink:
    compression: str = "none"
    topk_fraction: float = 0.1
    clip: float = 0.0
    """DP clip applied by the client (distributed / local noise); 0 = the client does not clip."""
    noise_std_sum: float = 0.0
    """z C: the std of the noise on the sum of a round's updates."""
    mode: str = "central"

    @property
    def active(self) -> bool:
        return self.compression != "none" or (self.clip > 0 and self.mode != "central")

    def noise_std(self, peers: int) -> float:
        """This client's noise: the whole ``z C`` (local) or its share ``z C / sqrt(peers)`` (distributed)."""
        if self.clip <= 0 or self.mode == "central":
            return 0.0
        return self.noise_std_sum if self.mode == "local" else self.noise_std_sum / math.sqrt(max(1, peers))

    def privatize(self, delta: StateDict, secret: bytes, round_num: int, peers: int) -> StateDict:
        """``clip_C(delta) + N(0, s^2 I)`` with ``s`` from :meth:`noise_std` (the delta unchanged without DP)."""
        std = self.noise_std(peers)
        if std == 0.0:
            return delta
        clipped, _ = clip_l2(delta, self.clip)
        gen = torch.Generator().manual_seed(derive_seed(secret.hex(), "update-noise", round_num))
        return add_gaussian_noise(clipped, std, gen)

    def apply(self, update: ClientUpdate, client: _Client, round_num: int, peers: int = 1) -> ClientUpdate:
        """The update as it is uploaded: its delta privatized and replaced by the compressed payload."""
        if not self.active or not update.delta:
            return update
        delta = self.privatize(update.delta, client.secret(), round_num, peers)
        store = getattr(client, "store", None)
        residual = store.load_residual(round_num - 1) if store is not None else getattr(client, "uplink_residual", None)
        if residual is not None and set(residual) != set(delta):
            residual = None  # the shared part changed shape (a config edit between runs): start afresh
        payload, new_residual = encode_with_feedback(delta, residual, self.compression, self.topk_fraction)
        if new_residual is not None:
            if store is not None:
                store.save_residual(round_num, new_residual)
            else:
                client.uplink_residual = new_residual  # type: ignore[attr-defined]
        return dataclasses.replace(update, delta=payload)
