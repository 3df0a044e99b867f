"""Micro-batching: concurrent single-image requests share one forward pass.

A forward pass over 32 digits costs little more than over one, so instead of running the model once per
request, requests that arrive while the model is busy wait in a queue and go through together in the next
pass. Nothing waits on a timer: an idle server answers a lone request at once, a busy one batches more.
All model work runs on one dedicated thread, which keeps the event loop free for HTTP and makes the
model's use single-threaded (safe) no matter how many requests are in flight. A waiter that gives up
(its task cancelled: the client went away) takes its item out of the next pass.
"""

from __future__ import annotations

import asyncio
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

DEFAULT_MAX_BATCH = 64  # bounds one pass's latency; at 32 concurrent clients a pass rarely holds more


class MicroBatcher:
    """``await batcher.submit(item)`` -> ``run_batch([... item ...])[i]``, with concurrent items coalesced."""

    def __init__(self, run_batch: Callable[[Sequence[Any]], Sequence[Any]], executor: ThreadPoolExecutor,
                 max_batch: int = DEFAULT_MAX_BATCH):
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch = max_batch
        self.batches = 0  # passes run so far, and items in them: the mean batch size shows the coalescing
        self.items = 0
        self.dropped = 0  # items whose waiter went away (a disconnected client) before their pass began
        # One queue per event loop: futures must be resolved on the loop that created them.
        self._queues: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _LoopQueue())
        future = loop.create_future()
        queue.pending.append((item, future))
        if not queue.draining:
            queue.draining = True
            loop.create_task(self._drain(loop, queue))
        return await future

    async def _drain(self, loop: asyncio.AbstractEventLoop, queue: "_LoopQueue") -> None:
        try:
            while queue.pending:
                batch = [entry for entry in queue.pending[:self.max_batch] if not entry[1].cancelled()]
                self.dropped += min(len(queue.pending), self.max_batch) - len(batch)
                del queue.pending[:self.max_batch]
                if batch:
                    await self._run(loop, batch)
        finally:
            queue.draining = False

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        items = [item for item, _ in batch]
        try:
            results = await loop.run_in_executor(self.executor, self.run_batch, items)
        except Exception as exc:  # one failing pass fails its own requests only; the queue goes on
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.items += len(items)
        for (_, future), result in zip(batch, results):
            if not future.done():  # the client may have gone away and cancelled its wait
                future.set_result(result)

    def waiting(self) -> int:
        """Items queued whose waiter is still there."""
        return sum(not future.cancelled() for queue in list(self._queues.values()) for _, future in queue.pending)

    def stats(self) -> dict:
        return {"batches": self.batches, "items": self.items, "dropped": self.dropped,
                "mean_batch": round(self.items / self.batches, 2) if self.batches else 0.0}


class _LoopQueue:
    __slots__ = ("pending", "draining")

    def __init__(self):
        self.pending: list = []
        self.draining = False
