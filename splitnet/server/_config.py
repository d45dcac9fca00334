"""Triton's ModelConfig of a served bundle, so that tritonclient and perf_analyzer can size requests."""

from __future__ import annotations

from splitnet.server._repository import TailModel
from splitnet.wire import PAYLOAD_INPUT
from splitnet.wire import triton_model_config_pb2 as mc

__all__ = ["PLATFORM", "model_config"]

PLATFORM = "splitnet_torch_export"


def model_config(
    model: TailModel,
    *,
    max_batch: int,
    max_delay_ms: float,
    instances: int = 1,
    threads: int | None = None,
) -> mc.ModelConfig:
    """The config of ``model`` as served.

    ``instances`` (batches run at once) and ``threads`` (torch's intra-op threads each,
    ``None``: torch's default) come as the parameters ``tail_instances`` and
    ``tail_threads``: this config message has no ``instance_group``.

    ``max_batch_size`` is 0: a request is one frame (its one input is one codec
    payload, no batch dimension); the server batches frames from many requests
    itself, which ``dynamic_batching`` describes (present when the tail batches).
    """
    config = mc.ModelConfig(
        name=model.name,
        platform=PLATFORM,
        backend="splitnet",
        max_batch_size=0,
    )
    config.version_policy.latest.num_versions = 1
    config.input.add(name=PAYLOAD_INPUT, data_type=mc.TYPE_UINT8, dims=[-1])
    for name, datatype, shape in model.output_metadata():
        config.output.add(name=name, data_type=mc.DataType.Value(f"TYPE_{datatype}"), dims=shape)
    batch = max(1, min(max_batch, model.max_batch))
    if batch > 1:
        config.dynamic_batching.preferred_batch_size.append(batch)
        config.dynamic_batching.max_queue_delay_microseconds = int(max_delay_ms * 1000)
    config.parameters["task"].string_value = model.task
    config.parameters["max_batch_frames"].string_value = str(batch)
    config.parameters["tail_instances"].string_value = str(instances)
    if threads is not None:
        config.parameters["tail_threads"].string_value = str(threads)
    return config
