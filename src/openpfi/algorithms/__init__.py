"""Pure maths on state dicts (``dict[str, torch.Tensor]``): no I/O, no global RNG.

Modules: ``state`` (arithmetic), ``aggregate`` (FedAvg, median, trimmed mean,
Krum), ``server_opt`` (FedAvgM / FedAdam / FedYogi / FedAdagrad), ``proximal``
(FedProx / Ditto term), ``lora`` (LoRA-aware aggregation), ``mgda`` (simplex
weights for FIRM and FMGDA), ``privacy`` (clipping, noise, RDP accounting),
``compress`` (float16, int8, top-k, error feedback).

Only ``openpfi.errors`` and ``openpfi.algorithms`` may be imported from here.
"""
