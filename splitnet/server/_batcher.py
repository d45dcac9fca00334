"""Dynamic batching: requests that arrive close together run as one batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from splitnet._errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["BatchStats", "DynamicBatcher"]


@dataclass(frozen=True)
class BatchStats:
    """How one item was batched: the batch size, its wait in the queue, the batch's compute time."""

    batch_size: int
    queue_s: float
    compute_s: float


class DynamicBatcher(Generic[T, R]):
    """Collects items into batches of at most ``max_batch``, waiting at most ``max_delay_s``.

    A batch starts with the first waiting item and closes when it is full or
    ``max_delay_s`` after that item arrived. Batches run off the event loop, in
    ``executor``, at most ``instances`` at a time (Triton's instance count; the
    executor needs as many workers): while they run, the next batch fills up, so
    under load batches grow by themselves. ``run_batch(items) -> results`` must
    return one result (or an ``Exception`` instance, which fails only that item) per
    item, and be safe to call from ``instances`` threads at once.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Sequence[R | Exception]],
        *,
        max_batch: int = 8,
        max_delay_s: float = 0.005,
        executor: Executor | None = None,
        instances: int = 1,
    ) -> None:
        if instances < 1:
            raise ConfigError(f"instances must be >= 1, got {instances}")
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if max_delay_s < 0:
            raise ConfigError(f"max_delay must be >= 0, got {max_delay_s}")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._executor = executor
        self.instances = instances
        self._running: set[asyncio.Task] = set()
        self._queue: asyncio.Queue[tuple[T, asyncio.Future, float]] = asyncio.Queue()
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finishes every queued item (the batch running included), then stops the worker."""
        if self._worker is not None:
            await self._queue.join()
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def submit(self, item: T) -> tuple[R, BatchStats]:
        """Queues ``item``; returns its result and how it was batched."""
        self.start()
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future, time.perf_counter()))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.instances)
        while True:
            # a free instance first, then the batch: items that come while every
            # instance is busy wait in the queue and make the next batch larger
            await slots.acquire()
            try:
                batch = await self._collect()
            except BaseException:
                slots.release()
                raise
            task = loop.create_task(self._run_and_release(loop, batch, slots))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _collect(self) -> list:
        first = await self._queue.get()
        batch = [first]
        deadline = first[2] + self.max_delay_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run_and_release(
        self, loop: asyncio.AbstractEventLoop, batch: list, slots: asyncio.Semaphore
    ) -> None:
        try:
            await self._run(loop, [b for b in batch if not b[1].cancelled()])
        finally:
            slots.release()
            for _ in batch:
                self._queue.task_done()

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        if not batch:
            return
        start = time.perf_counter()
        try:
            results: Sequence[Any] = await loop.run_in_executor(
                self._executor, self._run_batch, [b[0] for b in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(
                    f"run_batch returned {len(results)} results for {len(batch)} items"
                )
        except Exception as e:  # the whole batch failed: every item gets the error
            results = [e] * len(batch)
        compute = time.perf_counter() - start
        for (_, future, queued), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result((result, BatchStats(len(batch), start - queued, compute)))
