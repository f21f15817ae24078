"""Request batching of the features endpoint (`service.feature_batcher`).

The policy is tested on the event loop with a stand-in for the worker round trip that blocks until
the test lets it go, so "while a task runs" is exact rather than a race. The last test sends
concurrent requests through the real app, Redis and `celery worker`.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi import HTTPException, UploadFile
from fastapi.testclient import TestClient

from service.feature_batcher import BatchKey, FeatureBatcher, UnreadableImages
from tests.service.support import make_image, png_bytes

KEY: BatchKey = ("0123", "f" * 64)


class StandInWorker:
    """`EmbedBatch` stand-in: records each batch's file names, holds it until `release()`, answers one row per file.

    A file's row is `[its number]` (files are named by number); `fail` decides a batch's failure.
    """

    def __init__(self, fail: Callable[[list[str]], Exception | None] = lambda names: None) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail
        self._gate = threading.Event()
        self._started = threading.Semaphore(0)

    def __call__(self, key: BatchKey, files: list[UploadFile]) -> np.ndarray:
        assert key == KEY
        names = [str(f.filename) for f in files]
        self.batches.append(names)
        self._started.release()
        assert self._gate.wait(10), "the test never released the worker"
        error = self.fail(names)
        if error is not None:
            raise error
        return np.array([[float(name)] for name in names], dtype=np.float32)

    def release(self) -> None:
        self._gate.set()

    async def started(self, count: int) -> None:
        """Wait until `count` more batches have reached the worker."""
        for _ in range(count):
            assert await asyncio.to_thread(self._started.acquire, True, 10), "no batch reached the worker"


def _files(*numbers: int) -> list[UploadFile]:
    return [UploadFile(io.BytesIO(b"image"), filename=str(n)) for n in numbers]


def _request(batcher: FeatureBatcher, *numbers: int) -> asyncio.Task[np.ndarray]:
    files = _files(*numbers)
    return asyncio.create_task(batcher.embed(KEY, files, [str(f.filename) for f in files]))


async def _occupy(batcher: FeatureBatcher, worker: StandInWorker) -> asyncio.Task[np.ndarray]:
    """Request `0`, once it holds the worker: the sub-net's one task slot is taken until `release()`."""
    first = _request(batcher, 0)
    await worker.started(1)
    return first


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))  # a request never answered fails the test instead of hanging it


def _rows(answer: np.ndarray) -> list[int]:
    return [int(v) for v in answer[:, 0]]


def test_a_lone_request_is_sent_at_once_and_requests_that_arrive_meanwhile_share_the_next_task() -> None:
    async def scenario() -> None:
        worker = StandInWorker()
        sent: list[tuple[int, int]] = []
        batcher = FeatureBatcher(
            worker, tasks_in_flight=1, max_images=64, wait_timeout=30, on_task=lambda *t: sent.append(t)
        )
        first = await _occupy(batcher, worker)  # sent without waiting for company
        later = [_request(batcher, 1, 2), _request(batcher, 3), _request(batcher, 4, 5, 6)]
        await asyncio.sleep(0.05)
        assert worker.batches == [["0"]]  # the others wait: the sub-net's one slot is taken
        worker.release()
        answers = await asyncio.gather(first, *later)
        assert worker.batches == [["0"], ["1", "2", "3", "4", "5", "6"]]
        assert [_rows(a) for a in answers] == [[0], [1, 2], [3], [4, 5, 6]]  # each request its own rows
        assert sent == [(1, 1), (3, 6)]

    _run(scenario)


def test_batches_hold_at_most_max_images_and_a_full_batch_goes_without_a_free_slot() -> None:
    async def scenario() -> None:
        worker = StandInWorker()
        batcher = FeatureBatcher(worker, tasks_in_flight=1, max_images=4, wait_timeout=30)
        first = await _occupy(batcher, worker)
        small = _request(batcher, 1, 2)
        await asyncio.sleep(0.05)
        assert len(worker.batches) == 1  # 2 of 4 images: waits for the slot
        fills = _request(batcher, 3, 4, 5)  # 5 images queued: [1, 2] is as full as it gets, and goes
        await worker.started(1)
        assert worker.batches[1] == ["1", "2"]
        worker.release()
        answers = await asyncio.gather(first, small, fills)
        assert worker.batches == [["0"], ["1", "2"], ["3", "4", "5"]]
        assert [_rows(a) for a in answers] == [[0], [1, 2], [3, 4, 5]]

    _run(scenario)


def test_zero_tasks_in_flight_sends_every_request_alone() -> None:
    async def scenario() -> None:
        worker = StandInWorker()
        batcher = FeatureBatcher(worker, tasks_in_flight=0, max_images=64, wait_timeout=30)
        requests = [_request(batcher, n) for n in range(4)]
        await worker.started(4)  # all four reach the worker while none has finished
        worker.release()
        assert [_rows(a) for a in await asyncio.gather(*requests)] == [[0], [1], [2], [3]]
        assert sorted(worker.batches) == [["0"], ["1"], ["2"], ["3"]]

    _run(scenario)


def test_an_unreadable_image_fails_only_its_own_request_and_the_rest_of_the_batch_is_sent_again() -> None:
    def fail(names: list[str]) -> Exception | None:
        return UnreadableImages([names.index("4")]) if "4" in names else None

    async def scenario() -> None:
        worker = StandInWorker(fail)
        batcher = FeatureBatcher(worker, tasks_in_flight=1, max_images=64, wait_timeout=30)
        first = await _occupy(batcher, worker)
        before, broken, after = _request(batcher, 1, 2), _request(batcher, 3, 4), _request(batcher, 5)
        await asyncio.sleep(0.05)
        worker.release()
        answers = await asyncio.gather(first, before, broken, after, return_exceptions=True)
        error = answers[2]
        assert isinstance(error, HTTPException) and error.status_code == 400
        assert "'4'" in str(error.detail) and "'3'" not in str(error.detail)  # names its own bad image only
        assert [_rows(a) for a in (answers[0], answers[1], answers[3])] == [[0], [1, 2], [5]]
        assert worker.batches == [["0"], ["1", "2", "3", "4", "5"], ["1", "2", "5"]]

    _run(scenario)


def test_any_other_failure_answers_every_request_of_the_batch() -> None:
    def fail(names: list[str]) -> Exception | None:
        return HTTPException(503, detail="no worker") if "1" in names else None

    async def scenario() -> None:
        worker = StandInWorker(fail)
        batcher = FeatureBatcher(worker, tasks_in_flight=1, max_images=64, wait_timeout=30)
        first = await _occupy(batcher, worker)
        batch = [_request(batcher, 1), _request(batcher, 2)]
        await asyncio.sleep(0.05)
        worker.release()
        assert _rows(await first) == [0]
        for outcome in await asyncio.gather(*batch, return_exceptions=True):
            assert isinstance(outcome, HTTPException) and outcome.status_code == 503

    _run(scenario)


def test_a_request_that_waited_past_the_timeout_gets_503_and_is_not_sent() -> None:
    async def scenario() -> None:
        worker = StandInWorker()
        batcher = FeatureBatcher(worker, tasks_in_flight=1, max_images=64, wait_timeout=0.1)
        first = await _occupy(batcher, worker)
        waiting = _request(batcher, 1)
        await asyncio.sleep(0.3)  # past the timeout while the slot is taken
        worker.release()
        assert _rows(await first) == [0]
        with pytest.raises(HTTPException) as caught:
            await waiting
        assert caught.value.status_code == 503 and caught.value.headers == {"Retry-After": "10"}
        assert worker.batches == [["0"]]

    _run(scenario)


def test_concurrent_requests_through_the_service_get_their_own_embeddings(client: TestClient) -> None:
    """Real app, Redis and worker: answers under concurrency equal each request sent alone, and tasks were shared."""
    images = [png_bytes(make_image(i % 3, 7000 + i)) for i in range(12)]
    alone = []
    for i, image in enumerate(images):
        r = client.post("/subnets/0213/features", files=[("files", (f"{i}.png", image))])
        assert r.status_code == 200, r.text
        alone.append(np.asarray(r.json()["embeddings"], dtype=np.float32))

    def tasks_and_requests() -> tuple[float, float]:
        lines = dict(line.rsplit(" ", 1) for line in client.get("/metrics").text.splitlines() if " " in line)
        return float(lines["sdr_feature_task_requests_count"]), float(lines["sdr_feature_task_requests_sum"])

    def post(i: int) -> tuple[int, object]:
        files = [("files", (f"{i}.png", images[i]))]
        if i == 5:
            files.append(("files", ("broken.png", b"not an image")))
        r = client.post("/subnets/0213/features", files=files)
        return r.status_code, r.json()

    shared = False
    for _ in range(5):  # concurrency is up to the scheduler: until one task has answered several requests
        tasks_before, requests_before = tasks_and_requests()
        with ThreadPoolExecutor(len(images)) as pool:
            answers = list(pool.map(post, range(len(images))))
        tasks, requests = tasks_and_requests()
        for i, (code, body) in enumerate(answers):
            assert isinstance(body, dict)
            if i == 5:
                assert code == 400 and "broken.png" in body["detail"] and "5.png" not in body["detail"]
                continue
            assert code == 200, body
            np.testing.assert_allclose(np.asarray(body["embeddings"], dtype=np.float32), alone[i], atol=1e-5, rtol=0)
        shared = requests - requests_before > tasks - tasks_before
        if shared:
            break
    assert shared, "no worker task answered more than one request"
