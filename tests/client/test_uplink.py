"""The client-side uplink: DP clipping and noise shares, compression with the residual in the store."""

from __future__ import annotations

from pathlib import Path

import torch

from openpfi.algorithms.wire import decode, like_of
from openpfi.client.messages import ClientUpdate
from openpfi.client.store import ClientStore
from openpfi.client.uplink import Uplink


class _Client:
    def __init__(self, folder: Path):
        self.store = ClientStore(folder)

    def secret(self) -> bytes:
        return b"c" * 32


def test_noise_shares_and_local_noise() -> None:
    # Prepare: z C = 2
    shares = Uplink(clip=1.0, noise_std_sum=2.0, mode="distributed")
    local = Uplink(clip=1.0, noise_std_sum=2.0, mode="local")
    # Execute / Assert: 4 shares of std 1 sum to std 2; a local client adds all of it; central adds none
    assert shares.noise_std(4) == 1.0 and local.noise_std(4) == 2.0
    assert Uplink(clip=1.0, noise_std_sum=2.0, mode="central").noise_std(4) == 0.0
    d = {"w": torch.tensor([30.0, 40.0])}
    noised = local.privatize(d, b"c" * 32, 1, 4)
    assert torch.equal(noised["w"], local.privatize(d, b"c" * 32, 1, 4)["w"])  # the secret and round fix it
    clipped = Uplink(clip=1.0, noise_std_sum=1e-12, mode="local").privatize(d, b"c" * 32, 1, 4)
    assert torch.allclose(clipped["w"], torch.tensor([0.6, 0.8]))


def test_residual_is_kept_in_the_clients_store(tmp_path: Path) -> None:
    # Prepare: top-1 of 2 values, two rounds of the same delta
    client, up = _Client(tmp_path / "c"), Uplink(compression="topk", topk_fraction=0.5)
    delta = {"w": torch.tensor([3.0, 2.0])}
    # Execute
    first = up.apply(ClientUpdate("a", 1, delta), client, 1)
    second = up.apply(ClientUpdate("a", 1, delta), client, 2)
    # Assert: round 1 sends 3, keeps 2; round 2 sends the corrected [3, 4] -> 4
    like = like_of(delta)
    assert torch.equal(decode(first.delta, "topk", like, 0.5)["w"], torch.tensor([3.0, 0.0]))
    assert torch.equal(decode(second.delta, "topk", like, 0.5)["w"], torch.tensor([0.0, 4.0]))
    assert torch.equal(client.store.load_residual(2)["w"], torch.tensor([3.0, 0.0]))
    assert client.store.load(2) is None  # personal state is another kind
