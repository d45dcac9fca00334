"""The device side: run a bundle's head with OpenVINO, without torch.

Imports numpy and openvino (and the standard library) only, so it runs on a
host that has no torch.

Example:
    >>> from splitnet.device import HeadRunner, benchmark_head
    >>> runner = HeadRunner("bundle", device="CPU")
    >>> tensors = runner(frame)                  # H x W x 3 uint8 RGB
    >>> print(benchmark_head(runner, seconds=5))
"""

from splitnet.device._adapt import LinkEstimate, LinkEstimator, SwitchPolicy
from splitnet.device._adaptive import AdaptiveDaemon
from splitnet.device._daemon import DaemonConfig, DeviceDaemon, Summary, run_daemon
from splitnet.device._link import LinkEmulator, parse_link
from splitnet.device._modes import FrameHead, LocalDaemon, open_head, postprocess
from splitnet.device._runner import DeviceError, FrameError, HeadRunner
from splitnet.device._sources import (
    FrameRequest,
    FrameSource,
    list_frame_sources,
    open_source,
    register_frame_source,
)
from splitnet.device.bench import HeadBenchmark, benchmark_callable, benchmark_head

__all__ = [
    "AdaptiveDaemon",
    "DaemonConfig",
    "DeviceDaemon",
    "DeviceError",
    "FrameError",
    "FrameHead",
    "FrameRequest",
    "FrameSource",
    "HeadBenchmark",
    "HeadRunner",
    "LinkEmulator",
    "LinkEstimate",
    "LinkEstimator",
    "LocalDaemon",
    "Summary",
    "SwitchPolicy",
    "benchmark_callable",
    "benchmark_head",
    "list_frame_sources",
    "open_head",
    "open_source",
    "parse_link",
    "postprocess",
    "register_frame_source",
    "run_daemon",
]
