"""The inference server: KServe v2 over gRPC, dynamic batching, tails on CUDA or CPU.

Example:
    >>> server = InferenceServer(ServerConfig(repository="bundles", port=8001))
    >>> await server.start(); await server.wait()   # in an asyncio program
"""

from splitnet.server._core import InferenceCore, InferError
from splitnet.server._repository import FrameInput, TailModel, load_repository
from splitnet.server._server import InferenceServer, ServerConfig

__all__ = [
    "FrameInput",
    "InferError",
    "InferenceCore",
    "InferenceServer",
    "ServerConfig",
    "TailModel",
    "load_repository",
]
