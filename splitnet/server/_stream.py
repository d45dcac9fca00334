"""``ModelStreamInfer``'s answers: in request order, bounded by what the client reads.

Each request of a stream is answered in its turn: answers (errors included)
come back in the order of the requests, each with the request's ``id`` (an
error in ``error_message``, ``"CODE: message"``, with ``infer_response.id``,
``model_name`` and the ``device_id``/``frame_id`` parameters of the request).
Requests run concurrently; an answer that is ready early waits for those
before it.

At most ``max_inflight`` requests of a stream are in flight, counted from
when the request is read until its answer has been handed to gRPC: a client
that stops reading its answers stops the server from reading its requests
(gRPC's flow control then stops the client), and what the stream holds stays
bounded. Each request also holds its charge against the server's budget of
bytes in flight (:mod:`splitnet.server._admission`) until its answer is
written; one that does not fit is answered RESOURCE_EXHAUSTED in its turn.
One stream holds at most a quarter of that budget (past it, the stream is
read no further until its answers are written): a stream that never reads
cannot take the whole budget from everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator

from splitnet.server._admission import Ticket
from splitnet.server._core import InferenceCore, InferError, with_request_id
from splitnet.wire import inference_pb2 as pb

__all__ = ["answer_stream", "error_answer"]

STREAM_SHARE = 4  # one stream holds at most 1/STREAM_SHARE of the server's budget


def error_answer(request: pb.ModelInferRequest, error: InferError) -> pb.ModelStreamInferResponse:
    """The stream answer for a failed request: its status and message, and its ids.

    The request id is in ``infer_response.id`` and, for clients that only show
    ``error_message`` (tritonclient's stream callback does), at its end.
    """
    message = with_request_id(f"{error.code.name}: {error.message}", request.id)
    out = pb.ModelStreamInferResponse(error_message=message)
    out.infer_response.model_name = request.model_name
    out.infer_response.id = request.id
    for key in ("device_id", "frame_id"):
        if key in request.parameters:
            out.infer_response.parameters[key].CopyFrom(request.parameters[key])
    return out


async def answer_stream(
    core: InferenceCore,
    requests: AsyncIterable[pb.ModelInferRequest],
    caller: str,
    max_inflight: int,
) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """The answers to ``requests``, in their order (see the module's docstring)."""
    slots = asyncio.Semaphore(max_inflight)
    share = max(1, core.admission.max_bytes // STREAM_SHARE)
    held = 0  # bytes this stream's admitted requests hold
    freed = asyncio.Event()
    # (answer task, ticket) in request order; None once the requests end
    turns: asyncio.Queue[tuple[asyncio.Future, Ticket | None] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def answer(request: pb.ModelInferRequest, ticket: Ticket) -> pb.ModelStreamInferResponse:
        try:
            response = await core.infer(request, caller=caller, ticket=ticket)
        except InferError as e:
            return error_answer(request, e)
        return pb.ModelStreamInferResponse(infer_response=response)

    async def read() -> None:
        nonlocal held
        try:
            async for request in requests:
                await slots.acquire()  # released once this request's answer is written
                cost = core.cost(request)
                while held and held + cost > share:
                    freed.clear()
                    await freed.wait()
                try:
                    ticket = core.admit(request)
                except InferError as e:
                    done = loop.create_future()
                    done.set_result(error_answer(request, e))
                    await turns.put((done, None))
                    continue
                held += ticket.cost
                await turns.put((asyncio.ensure_future(answer(request, ticket)), ticket))
        finally:
            await turns.put(None)

    reader = asyncio.create_task(read())
    try:
        while (turn := await turns.get()) is not None:
            pending, ticket = turn
            try:
                out = await pending
                yield out  # returns once gRPC has taken the message
            finally:
                pending.cancel()  # no-op once done; the call may have ended while it ran
                if ticket is not None:
                    held -= ticket.cost
                    ticket.release()
                    freed.set()
                slots.release()
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        while not turns.empty():
            turn = turns.get_nowait()
            if turn is not None:
                turn[0].cancel()
                if turn[1] is not None:
                    turn[1].release()
