"""Request batching for `POST /subnets/{path}/features`: concurrent requests for a sub-net share one worker task.

A features task costs the service nearly the same whether it embeds one image or 64: the Celery
round trip, the staging file, the worker's dispatch and reply, and the API's share of them
outweigh a small forward pass. With one image per request and 16 requests in flight, 2 cores
embedded about 160 images/s where requests of 64 images reach over 2,000 (`docs/BENCHMARKS.md`,
serving). So an API process keeps at most `SDR_FEATURE_TASKS_IN_FLIGHT` tasks (default 1) running
per sub-net; requests that arrive meanwhile queue up and go to a worker together, as one task of
up to `SDR_MAX_FEATURE_FILES` images, whose rows are handed back request by request. A queue that
holds a full task's worth of images sends it at once, slot or not, so large requests keep every
worker busy while small ones are gathered.

This is "batch while busy", not a time window: a request that finds a slot free is sent at once,
so a lone client waits no longer than without batching, and batches grow only as fast as requests
pile up behind a busy worker.

Each request gets its own embeddings, as if sent alone (up to float rounding: the same image in a
forward batch of another size differs by about 1e-6). A request whose images cannot be decoded
gets its own 400 naming them, and the others of its batch are sent again without it. Any other
failure (no worker in time, a stale checkpoint) is answered to every request of the batch. A
request that waited in the queue past `SDR_WAIT_TIMEOUT` gets a 503 instead of being sent.

All bookkeeping runs on the API's event loop; only the staging and the wait for the worker run in
a thread, one per task.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from fastapi import HTTPException, UploadFile, status
from fastapi.concurrency import run_in_threadpool

__all__ = ["BatchKey", "EmbedBatch", "FeatureBatcher", "UnreadableImages"]

BatchKey = tuple[str, str]  # (sub-net path, checkpoint sha256): only these requests share a forward pass


class UnreadableImages(Exception):
    """Raised by an `EmbedBatch` when the worker could not decode some images: their batch indices."""

    def __init__(self, indices: Sequence[int]) -> None:
        super().__init__(f"unreadable images at {list(indices)}")
        self.indices = list(indices)


# Runs in a thread: embeds the files of one batch, in order, as one worker task; returns `[N, D]`
# float32 rows, or raises `UnreadableImages` / `HTTPException`.
EmbedBatch = Callable[[BatchKey, list[UploadFile]], np.ndarray]


@dataclass
class _Request:
    files: list[UploadFile]
    names: list[str]
    deadline: float  # time.monotonic() after which it is no longer sent
    answer: asyncio.Future[np.ndarray] = field(repr=False)


class FeatureBatcher:
    """Coalesces the features requests of one API process, per sub-net, into worker tasks.

    Args:
        embed_batch: sends one batch to a worker and waits for it (`EmbedBatch`).
        tasks_in_flight: tasks running at once per key before requests wait to be batched (a full
            batch is sent regardless); 0 sends every request as its own task.
        max_images: most images in one task (a single larger request is still sent alone).
        wait_timeout: seconds a request may wait in the queue before it is answered 503.
        on_task: called with (requests, images) of every task sent, for metrics.
    """

    def __init__(
        self,
        embed_batch: EmbedBatch,
        tasks_in_flight: int,
        max_images: int,
        wait_timeout: float,
        on_task: Callable[[int, int], None] | None = None,
    ) -> None:
        if tasks_in_flight < 0 or max_images < 1:
            raise ValueError(f"need tasks_in_flight >= 0 and max_images >= 1, got {tasks_in_flight}, {max_images}")
        self._embed_batch = embed_batch
        self._tasks_in_flight = tasks_in_flight
        self._max_images = max_images
        self._wait_timeout = wait_timeout
        self._on_task = on_task
        self._queues: dict[BatchKey, deque[_Request]] = {}
        self._running: dict[BatchKey, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones

    async def embed(self, key: BatchKey, files: list[UploadFile], names: list[str]) -> np.ndarray:
        """The `[len(files), D]` embeddings of one request's images, in order.

        Raises:
            HTTPException: 400 naming this request's unreadable images, 503 when no worker answered
                in time, or the worker's own status (404, 409, 500, ...).
        """
        answer: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        request = _Request(files, names, time.monotonic() + self._wait_timeout, answer)
        self._queues.setdefault(key, deque()).append(request)
        self._dispatch(key)
        return await answer

    def _dispatch(self, key: BatchKey) -> None:
        """Send queued requests of `key` while it has a free task slot or a full batch (event loop only)."""
        queue = self._queues.get(key)
        while queue and (self._has_slot(key) or sum(len(r.files) for r in queue) >= self._max_images):
            batch = self._take(queue)
            if batch:
                self._running[key] = self._running.get(key, 0) + 1
                task = asyncio.get_running_loop().create_task(self._run(key, batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if queue is not None and not queue:
            del self._queues[key]

    def _has_slot(self, key: BatchKey) -> bool:
        return self._tasks_in_flight == 0 or self._running.get(key, 0) < self._tasks_in_flight

    def _take(self, queue: deque[_Request]) -> list[_Request]:
        """The next batch: queued requests in order, up to `max_images` images (at least one request)."""
        batch: list[_Request] = []
        images = 0
        now = time.monotonic()
        while queue:
            request = queue[0]
            if request.answer.done():  # the client went away while it waited
                queue.popleft()
                continue
            if now > request.deadline:
                queue.popleft()
                _settle(request, _queue_timeout(self._wait_timeout))
                continue
            if batch and (self._tasks_in_flight == 0 or images + len(request.files) > self._max_images):
                break
            batch.append(queue.popleft())
            images += len(request.files)
        return batch

    async def _run(self, key: BatchKey, batch: list[_Request]) -> None:
        if self._on_task is not None:
            self._on_task(len(batch), sum(len(r.files) for r in batch))
        try:
            rows = await run_in_threadpool(self._embed_batch, key, [f for r in batch for f in r.files])
        except UnreadableImages as exc:
            self._answer_unreadable(key, batch, set(exc.indices))
        except Exception as exc:  # the same failure for everyone in the batch
            for request in batch:
                _settle(request, exc)
        else:
            start = 0
            for request in batch:
                _settle(request, rows[start : start + len(request.files)])
                start += len(request.files)
        finally:  # no await between the answers and this: a finished request never sees a stale count
            self._running[key] -= 1
            if not self._running[key]:
                del self._running[key]
            self._dispatch(key)

    def _answer_unreadable(self, key: BatchKey, batch: list[_Request], bad: set[int]) -> None:
        """400 to each request with an unreadable image; the others go back to the front of the queue."""
        retry: list[_Request] = []
        start = 0
        for request in batch:
            own = [request.names[i - start] for i in sorted(bad) if start <= i < start + len(request.files)]
            start += len(request.files)
            if own:
                detail = f"unreadable image(s): {', '.join(repr(name) for name in own)}"
                _settle(request, HTTPException(status.HTTP_400_BAD_REQUEST, detail=detail))
            else:
                retry.append(request)
        self._queues.setdefault(key, deque()).extendleft(reversed(retry))


def _settle(request: _Request, outcome: np.ndarray | BaseException) -> None:
    """Answer a request (rows or an exception) unless it is answered already or its client went away."""
    if request.answer.done():
        return
    if isinstance(outcome, BaseException):
        request.answer.set_exception(outcome)
    else:
        request.answer.set_result(outcome)


def _queue_timeout(wait_timeout: float) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"no worker took this request within {wait_timeout:g} s",
        headers={"Retry-After": "10"},
    )
