"""openpfi values as Flower records, and back.

Tensors travel as ``flwr.app.ArrayRecord`` entries (numpy arrays serialized
with ``np.save(allow_pickle=False)``: never pickle), scalars as
``MetricRecord``, strings as ``ConfigRecord``. The record names of a reply:

==================== ========================================== ==========================
record               content                                    when
==================== ========================================== ==========================
``delta``            ArrayRecord: the shared adapter delta       train reply (not SecAgg+ updates)
``extra.<name>``     ArrayRecord: ``ClientUpdate.extra[name]``   train reply, if any
``monitor``          ArrayRecord ``{"report": vector}``          train reply, monitor on, no SecAgg+
``fit``              MetricRecord: num_examples + scalars        train reply
``eval``             MetricRecord: loss, counts                  evaluate reply
``client``           ConfigRecord ``{"client_id": ...}``         every reply
==================== ========================================== ==========================

The ClientApp builds its replies from numpy arrays (``fit_content``, ``eval_content``: the node
worker's answers), so a ClientApp process never imports torch; the ServerApp reads them back
into torch tensors (``content_to_update``, ``content_to_eval``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

if TYPE_CHECKING:  # torch stays out of the ClientApp processes
    from openpfi.algorithms.state import StateDict
    from openpfi.client.messages import ClientUpdate, EvalResult

EXTRA = "extra."


def state_to_record(state: StateDict) -> ArrayRecord:
    """A state dict as an ArrayRecord, keys sorted (float tensors stay float32)."""
    return ArrayRecord({k: state[k].detach().cpu().contiguous() for k in sorted(state)})


def record_to_state(record: ArrayRecord) -> StateDict:
    import torch  # noqa: F401  (to_torch_state_dict needs it imported)

    return {k: v.clone() for k, v in record.to_torch_state_dict().items()}


def arrays_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """numpy arrays as an ArrayRecord, keys sorted: the same bytes as ``state_to_record`` of the tensors."""
    # np.ascontiguousarray turns a 0-d array into a 1-d one; the reshape keeps a scalar (int8 scales) a scalar
    return ArrayRecord({k: Array(np.ascontiguousarray(arrays[k]).reshape(np.shape(arrays[k]))) for k in sorted(arrays)})


def record_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def vector_record(vector: np.ndarray) -> ArrayRecord:
    return ArrayRecord([np.asarray(vector, dtype=np.float64)])


def record_vector(record: ArrayRecord) -> np.ndarray:
    return record.to_numpy_ndarrays()[0]


def _client_record(client_id: str) -> ConfigRecord:
    return ConfigRecord({"client_id": client_id})


def fit_content(
    client_id: str,
    num_examples: int,
    scalars: Mapping[str, float],
    delta: Mapping[str, np.ndarray] | None,
    extra: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    monitor: np.ndarray | None = None,
) -> RecordDict:
    """The reply of a train message from numpy arrays; ``delta=None``: the delta stays home (SecAgg+)."""
    content = RecordDict(
        {
            "client": _client_record(client_id),
            "fit": MetricRecord({"num_examples": int(num_examples), **_floats(scalars)}),
        }
    )
    if delta is not None:
        content["delta"] = arrays_record(delta)
        for name, arrays in (extra or {}).items():
            content[EXTRA + name] = arrays_record(arrays)
    if monitor is not None:
        content["monitor"] = vector_record(monitor)
    return content


def update_to_content(update: ClientUpdate, *, with_delta: bool = True, with_monitor: bool = True) -> RecordDict:
    """The reply of a train message. Under SecAgg+ the delta and/or the monitor vector stay home."""

    def arrays(state: StateDict) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().contiguous().numpy() for k, v in state.items()}

    return fit_content(
        update.client_id,
        update.num_examples,
        update.scalars,
        arrays(update.delta) if with_delta else None,
        {name: arrays(s) for name, s in update.extra.items()},
        update.monitor.values if with_monitor and update.monitor is not None else None,
    )


def content_to_update(content: RecordDict) -> ClientUpdate:
    from openpfi.client.messages import ClientUpdate, MonitorReport

    fit = dict(content.metric_records["fit"])
    num_examples = int(fit.pop("num_examples"))
    delta = record_to_state(content.array_records["delta"]) if "delta" in content.array_records else {}
    extra = {k[len(EXTRA) :]: record_to_state(v) for k, v in content.array_records.items() if k.startswith(EXTRA)}
    vector = record_vector(content.array_records["monitor"]) if "monitor" in content.array_records else None
    scalars = {k: float(v) for k, v in fit.items()}  # type: ignore[arg-type]
    monitor = None if vector is None else MonitorReport(vector)
    return ClientUpdate(client_id(content), num_examples, delta, scalars, extra, monitor)  # checks the scalars


def eval_content(client_id: str, num_examples: int, loss: float, target_tokens: int, personal_loss: float | None) -> RecordDict:
    metrics: dict[str, Any] = {"num_examples": int(num_examples), "loss": float(loss), "target_tokens": int(target_tokens)}
    if personal_loss is not None:
        metrics["personal_loss"] = float(personal_loss)
    return RecordDict({"client": _client_record(client_id), "eval": MetricRecord(metrics)})


def eval_to_content(result: EvalResult) -> RecordDict:
    return eval_content(result.client_id, result.num_examples, result.loss, result.target_tokens, result.personal_loss)


def content_to_eval(content: RecordDict) -> EvalResult:
    from openpfi.client.messages import EvalResult
    m = content.metric_records["eval"]
    personal = m.get("personal_loss")
    return EvalResult(
        client_id(content),
        int(m["num_examples"]),  # type: ignore[arg-type]
        float(m["loss"]),  # type: ignore[arg-type]
        int(m["target_tokens"]),  # type: ignore[arg-type]
        None if personal is None else float(personal),  # type: ignore[arg-type]
    )


def client_id(content: RecordDict) -> str:
    return str(content.config_records["client"]["client_id"])


def _floats(scalars: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in scalars.items()}


def wire_bytes(message: Message) -> int:
    """Bytes of the serialized objects of a message (content, records, arrays, metadata).

    What Flower pushes or pulls for it, without HTTP/TLS framing; an object shared by
    several messages (the same global adapter to many nodes) counts once per message.
    """
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())


def reply_error(message: Message) -> str:
    """A reply's error as one readable line (a ClientApp exception shows its own message)."""
    reason = message.error.reason
    # Flower formats ClientApp exceptions as "<class 'X'>:<'message'>"
    if reason.startswith("<class") and ":<'" in reason:
        reason = reason.split(":<'", 1)[1].rsplit("'>", 1)[0]
    return reason or f"error code {message.error.code}"

