"""Serving: the features endpoint against the same sub-net run locally, and the weights endpoint cold vs cached.

A real `sdr serve` on a loopback port with the shipped checkpoint: embedded Redis, and the worker
as `make run` deploys it, one prefork child per core with one torch thread each. (One child of two
threads was measured 15-20 points lower with requests in flight: any other process waking up
stalls one of its two threads, and the whole forward waits for it.)

The baseline does what the worker's features task does for the same PNG files, with no HTTP,
Celery or Redis in between: decode with the checkpoint's preprocessing, normalise, one forward pass
per `SDR_FEATURE_BATCH_SIZE` images with the extracted timm sub-net. It runs in three layouts, and
each round's baseline is the fastest of them:
- one forward at a time on all torch threads, in this process;
- one thread per core with one torch thread each, a batch per thread, in this process;
- one process per core with one torch thread each, a batch per task: the worker's own layout
  without the service. Threads of one process contend for the GIL on 28-px images (decode and the
  small convolutions hold it often), so which of the last two is faster varies from run to run.
  Before this layout was added, the service, whose children are processes, once came out at 114%
  of the threaded ones: that measured the GIL, not the service.
Clients and baselines alternate round by round.

The load generator shares the two cores with the service, so it is made cheap: each request's
multipart body is encoded once, before the rounds, and only sent and answered while they are timed
(its CPU per image is reported). A warm-up round with requests in flight comes first, so that every
worker child has loaded the sub-net before anything is timed (one warm-up request reached only one
child, and the other loaded the checkpoint inside the first timed round).

"Batched" sends 64 images per request, the most a request may hold (`SDR_MAX_FEATURE_FILES`) and
one forward batch of the worker, so the endpoint runs the same forward passes as the baseline; a
single client waits for each answer before it sends the next request, so its rate is bound by
latency. "Requests in flight" keeps `CLIENTS` batched requests open at once, as a server's clients
do: that is the throughput the goal is about. "One per request" sends images singly: one client
waiting for each answer (no batching can help it), and `SINGLE_CLIENTS` requests in flight, with
and without request batching (`service.feature_batcher`): a second `sdr serve` runs with
`SDR_FEATURE_TASKS_IN_FLIGHT=0`, one worker task per request.

Where the CPU goes: while the requests-in-flight client runs, the CPU time of each process of the
service (API, Redis, the worker's main process, its children) is read with `psutil`, per image:
the serving overhead process by process, against the worker children's own decode + forward.

Weights: the first `GET /subnets/{path}/weights` of a path has a worker extract and write it; later
ones stream the cached file.
"""

from __future__ import annotations

import io
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import torch
from PIL import Image

from benchmarks.report import Goal, Plot, Section, Table, new_figure
from benchmarks.server import CHECKPOINT, FEATURE_BATCH, Server
from sdr_model import extract_subnet, inference_subnet, load_checkpoint
from sdr_model.config import Preprocessing
from sdr_model.datasets.images import decode_images, normalize
from sdr_model.torch_threads import torch_threads

PATH = "0123"
BATCHED = FEATURE_BATCH  # images per request in the batched client (SDR_MAX_FEATURE_FILES, also 64)
CLIENTS = 4  # requests in flight for the concurrent client
SINGLE_CLIENTS = 16  # single-image requests in flight (SDR_MAX_INFLIGHT_REQUESTS, the API's default bound)
PREPARED_REPEATS = 9  # alternating forwards per batch size, as extracted vs prepared
LOCAL_ONE = "local, one forward at a time"
LOCAL_THREADS = "local, one thread per core"
LOCAL_PROCESSES = "local, one process per core"
LOCAL = (LOCAL_ONE, LOCAL_THREADS, LOCAL_PROCESSES)
CONCURRENT = f"endpoint, batched, {CLIENTS} requests in flight"
CONCURRENT_JSON = f"{CONCURRENT}, JSON answers"
SINGLES_BATCHED = f"endpoint, one per request, {SINGLE_CLIENTS} in flight, request batching"
SINGLES_ALONE = f"endpoint, one per request, {SINGLE_CLIENTS} in flight, one task each"
GOAL = 0.8  # issue 9: the endpoint keeps at least 80% of the same model's throughput without the service
WORKER_CHILDREN = "worker children (decode + forward)"
SERVICE_ROLES = ("API (uvicorn)", "Redis", "worker, main process", WORKER_CHILDREN)


def _images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        file = folder / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(file)
        files.append(file)
    return files


def _embed(subnet: torch.nn.Module, files: list[Path], preprocessing: Preprocessing) -> np.ndarray:
    """What the features task does: decode on one thread, normalise, a forward per `FEATURE_BATCH` images."""
    decoded = decode_images([str(f) for f in files], preprocessing, num_threads=1)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(decoded.pixels), FEATURE_BATCH):
            x = normalize(decoded.pixels[start : start + FEATURE_BATCH], preprocessing)
            chunks.append(subnet(x).float().numpy())
    return np.concatenate(chunks)


def _parts(files: list[Path], size: int) -> list[list[Path]]:
    """`files` cut into consecutive runs of `size` (the last may be shorter)."""
    return [files[start : start + size] for start in range(0, len(files), size)]


def _local_threads(
    subnet: torch.nn.Module, files: list[Path], preprocessing: Preprocessing, workers: int
) -> np.ndarray:
    """`_embed` in `workers` threads of this process, one torch thread each, a batch per task."""
    with torch_threads(1), ThreadPoolExecutor(workers) as pool:
        parts = _parts(files, FEATURE_BATCH)
        return np.concatenate(list(pool.map(lambda part: _embed(subnet, part, preprocessing), parts)))


# One local process's model: loaded once per process by `_load_local` (the pool's initializer).
_local_model: tuple[torch.nn.Module, Preprocessing] | None = None


def _load_local() -> None:
    global _local_model
    torch.set_num_threads(1)
    model, meta = load_checkpoint(CHECKPOINT)
    _local_model = inference_subnet(extract_subnet(model, PATH)), meta.preprocessing


def _embed_local(files: list[Path]) -> tuple[np.ndarray, float]:
    """`_embed` in a pool process, and the CPU seconds it took there (the process runs one task at a time)."""
    assert _local_model is not None, "the pool's initializer loads the model"
    start = time.process_time()
    subnet, preprocessing = _local_model
    return _embed(subnet, files, preprocessing), time.process_time() - start


def _local_processes(pool: ProcessPoolExecutor, files: list[Path]) -> tuple[np.ndarray, float]:
    """`_embed` in the pool's processes (one per core, one torch thread each), a batch per task; their CPU seconds."""
    results = list(pool.map(_embed_local, _parts(files, FEATURE_BATCH)))
    return np.concatenate([r[0] for r in results]), sum(r[1] for r in results)


# A request as the load generator sends it: the encoded multipart body and its content type.
Body = tuple[bytes, str]


def _bodies(files: list[Path], per_request: int) -> list[Body]:
    """Each request's multipart body (field `files`), encoded once so that timing sends only bytes."""
    bodies = []
    for part in _parts(files, per_request):
        request = httpx.Request(
            "POST", "http://bench", files=[("files", (f.name, f.read_bytes(), "image/png")) for f in part]
        )
        bodies.append((request.read(), request.headers["content-type"]))
    return bodies


def _endpoint(client: httpx.Client, url: str, bodies: list[Body], npy: bool = True) -> np.ndarray:
    """The rows of each request in turn, asked for as .npy (or the default JSON)."""
    chunks = []
    accept = "application/x-npy" if npy else "application/json"
    for body, content_type in bodies:
        r = client.post(
            f"{url}/subnets/{PATH}/features", content=body, headers={"Content-Type": content_type, "Accept": accept}
        )
        r.raise_for_status()
        chunks.append(np.load(io.BytesIO(r.content)) if npy else np.asarray(r.json()["embeddings"], dtype=np.float32))
    return np.concatenate(chunks)


def _concurrent(client: httpx.Client, url: str, bodies: list[Body], clients: int, npy: bool = True) -> np.ndarray:
    """`_endpoint` with `clients` requests in flight (httpx's pool: one connection each); rows in request order."""
    with ThreadPoolExecutor(clients) as pool:
        return np.concatenate(list(pool.map(lambda body: _endpoint(client, url, [body], npy), bodies)))


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _service_cpu(server: Server) -> dict[str, float]:
    """CPU seconds so far of each role in the service's process tree (children that exited are not counted)."""
    api = psutil.Process(server.proc.pid)
    roles = dict.fromkeys(SERVICE_ROLES, 0.0)
    roles["API (uvicorn)"] = _cpu_seconds(api)
    for child in api.children():
        try:
            if "worker" in child.cmdline():
                roles["worker, main process"] += _cpu_seconds(child)
                roles[WORKER_CHILDREN] += sum(_cpu_seconds(c) for c in child.children())
            else:
                roles["Redis"] += _cpu_seconds(child)
        except psutil.Error:
            continue
    return roles


def _feature_tasks(client: httpx.Client, url: str) -> tuple[float, float]:
    """Worker tasks and the features requests they answered so far, from the API's `/metrics`."""
    values = dict(line.rsplit(" ", 1) for line in client.get(f"{url}/metrics").text.splitlines() if " " in line)
    return float(values["sdr_feature_task_requests_count"]), float(values["sdr_feature_task_requests_sum"])


def _prepared_vs_extracted(extracted: torch.nn.Module, prepared: torch.nn.Module, pixels: torch.Tensor) -> Table:
    """One forward on one torch thread, the sub-net as extracted vs as the worker runs it, alternating."""
    table = Table(["batch", "as extracted", "prepared (`inference_subnet`)", "speedup", "max abs diff"])
    with torch_threads(1), torch.inference_mode():
        for batch in (FEATURE_BATCH, 1):
            x = pixels[:batch]
            times: dict[torch.nn.Module, list[float]] = {extracted: [], prepared: []}
            for _ in range(PREPARED_REPEATS):
                for net, spent in times.items():
                    start = time.perf_counter()
                    net(x)
                    spent.append(time.perf_counter() - start)
            before, after = statistics.median(times[extracted]), statistics.median(times[prepared])
            diff = float((extracted(x) - prepared(x)).abs().max())
            speedup = f"{before / after:.2f}x"
            table.add(batch, f"{1000 * before:.2f} ms", f"{1000 * after:.2f} ms", speedup, f"{diff:.1e}")
    return table


def _plot(rate: dict[str, float], ratio: dict[str, float]) -> Plot:
    """Images/s of every client, local layouts and endpoint, with the goal's share of the fastest local run."""
    fig = new_figure(9.0, 3.6)
    ax = fig.subplots()
    names = list(rate)
    colors = ["#8C8C8C" if name in LOCAL else "#4C72B0" for name in names]
    ax.barh(names, [rate[name] for name in names], color=colors)
    for y, name in enumerate(names):
        ax.text(rate[name], y, f" {rate[name]:.0f} ({ratio[name]:.0%})", va="center", fontsize=8)
    fastest_local = max(rate[name] for name in LOCAL)
    ax.axvline(GOAL * fastest_local, color="#C44E52", linestyle="--", linewidth=1, label=f"goal: {GOAL:.0%} of local")
    ax.set_xlim(0, fastest_local * 1.3)
    ax.invert_yaxis()
    ax.set_xlabel("images / s on 2 CPU cores (in brackets: vs the fastest local run)")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    return Plot("serving", "Features endpoint throughput by client, beside the same sub-net run locally", fig)


def bench(quick: bool) -> Section:
    images, rounds = (128, 2) if quick else (1024, 6)
    cores = torch.get_num_threads()
    model, meta = load_checkpoint(CHECKPOINT)
    extracted = extract_subnet(model, PATH)
    subnet = inference_subnet(extracted)
    preprocessing = meta.preprocessing
    throughput = Table(["client", "images / s", "vs the fastest local run", "CPU per image", "max abs diff to local"])
    where = Table(["process", f"CPU per image, {CLIENTS} requests in flight", "vs the worker children"])
    weights = Table(["request", "median", "requests"])
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch/OpenMP state forked
    with (
        tempfile.TemporaryDirectory() as tmp,
        ProcessPoolExecutor(cores, mp_context=spawn, initializer=_load_local) as pool,
    ):
        files = _images(Path(tmp), images)
        batched, single = _bodies(files, BATCHED), _bodies(files[: images // 8], 1)
        server = Server(Path(tmp) / "data", cores)
        unbatched = Server(Path(tmp) / "data-unbatched", cores, feature_tasks_in_flight="0")
        try:
            with httpx.Client(timeout=300) as client:
                reference = _embed(subnet, files, preprocessing)
                first = decode_images([str(f) for f in files[:FEATURE_BATCH]], preprocessing)  # the largest batch timed
                prepared = _prepared_vs_extracted(extracted, subnet, normalize(first.pixels, preprocessing))
                _local_processes(pool, files)  # warm-up: every pool process loads the model
                for url in (server.url, unbatched.url):  # warm-up: every worker child loads the sub-net
                    _concurrent(client, url, batched, CLIENTS)

                def own_cpu(run: Callable[[], np.ndarray]) -> Callable[[], tuple[np.ndarray, float]]:
                    def timed() -> tuple[np.ndarray, float]:
                        start = time.process_time()
                        return run(), time.process_time() - start

                    return timed

                clients: dict[str, Callable[[], tuple[np.ndarray, float]]] = {
                    LOCAL_ONE: own_cpu(lambda: _embed(subnet, files, preprocessing)),
                    LOCAL_THREADS: own_cpu(lambda: _local_threads(subnet, files, preprocessing, cores)),
                    LOCAL_PROCESSES: lambda: _local_processes(pool, files),
                    CONCURRENT: own_cpu(lambda: _concurrent(client, server.url, batched, CLIENTS)),
                    CONCURRENT_JSON: own_cpu(lambda: _concurrent(client, server.url, batched, CLIENTS, npy=False)),
                    "endpoint, batched, one client": own_cpu(lambda: _endpoint(client, server.url, batched)),
                    "endpoint, one per request, one client": own_cpu(lambda: _endpoint(client, server.url, single)),
                    SINGLES_BATCHED: own_cpu(lambda: _concurrent(client, server.url, single, SINGLE_CLIENTS)),
                    SINGLES_ALONE: own_cpu(lambda: _concurrent(client, unbatched.url, single, SINGLE_CLIENTS)),
                }
                tasks = requests = 0.0  # of the request-batching client, summed over its runs
                seconds: dict[str, list[float]] = {name: [] for name in clients}
                cpu: dict[str, list[float]] = {name: [] for name in clients}
                diffs: dict[str, float] = dict.fromkeys(clients, 0.0)
                service_cpu = dict.fromkeys(SERVICE_ROLES, 0.0)  # seconds, summed over the concurrent runs
                for _ in range(rounds):
                    for name, run in clients.items():
                        before = _service_cpu(server) if name == CONCURRENT else None
                        tasks_before = _feature_tasks(client, server.url) if name == SINGLES_BATCHED else None
                        start = time.perf_counter()
                        out, spent = run()
                        if tasks_before is not None:
                            after = _feature_tasks(client, server.url)
                            tasks, requests = tasks + after[0] - tasks_before[0], requests + after[1] - tasks_before[1]
                        seconds[name].append((time.perf_counter() - start) / len(out))
                        cpu[name].append(spent / len(out))
                        diffs[name] = max(diffs[name], float(np.abs(out - reference[: len(out)]).max()))
                        if before is not None:
                            for role, total in _service_cpu(server).items():
                                service_cpu[role] += total - before[role]
                cold: list[float] = []
                cached: list[float] = []
                for path in ("1000", "2000", "3000"):
                    for bucket in (cold, cached):
                        start = time.perf_counter()
                        client.get(f"{server.url}/subnets/{path}/weights").raise_for_status()
                        bucket.append(time.perf_counter() - start)
        finally:
            server.stop()
            unbatched.stop()
    rate = {name: 1 / statistics.median(s) for name, s in seconds.items()}
    # Each round's ratio against the baseline of the same round, then the median: the baseline
    # drifts by up to 20% between runs on a shared machine, and a ratio of two medians would carry it.
    # The baseline of a round is the fastest of the local layouts in that round.
    best = [min(times) for times in zip(*(seconds[name] for name in LOCAL), strict=True)]
    ratio = {name: statistics.median(b / c for b, c in zip(best, s, strict=True)) for name, s in seconds.items()}
    for name, r in rate.items():
        throughput.add(
            name,
            f"{r:.0f}",
            f"{100 * ratio[name]:.0f}%",
            f"{1000 * statistics.median(cpu[name]):.2f} ms",
            f"{diffs[name]:.1e}",
        )
    per_image = {"load generator (this process)": statistics.median(cpu[CONCURRENT])}
    per_image |= {role: total / (rounds * images) for role, total in service_cpu.items()}
    compute = per_image[WORKER_CHILDREN]
    for role, spent in per_image.items():
        where.add(role, f"{1000 * spent:.3f} ms", f"{100 * spent / compute:.0f}%")
    overhead = sum(spent for role, spent in per_image.items() if role != WORKER_CHILDREN)
    where.add("overhead: all but the worker children", f"{1000 * overhead:.3f} ms", f"{100 * overhead / compute:.0f}%")
    weights.add("cold (worker extracts, writes the cache file)", f"{1000 * statistics.median(cold):.0f} ms", 3)
    weights.add("cached (streams the file)", f"{1000 * statistics.median(cached):.0f} ms", 3)
    weights.add("cold / cached", f"{statistics.median(cold) / statistics.median(cached):.1f}x", "")
    return Section(
        "Serving: features endpoint vs the same model run locally, weights cold vs cached",
        __name__,
        f"sdr_tiny sub-net {PATH}, {images} 28-px PNGs per round, {rounds} rounds, clients and local runs "
        f"alternating; `sdr serve` on loopback, {cores} worker processes of one torch thread (a second one "
        "without request batching for the row that says so).",
        tables=[throughput, where, weights, prepared],
        plots=[_plot(rate, ratio)],
        notes=[
            '"vs the fastest local run" is the median over rounds of each round\'s ratio to the fastest of the '
            "three local layouts in that round (no HTTP, Celery or Redis; `benchmarks/serving.py` says why "
            'the process-per-core one is there). "CPU per image" is the local layout\'s decode + forward, and '
            "for a client the load generator's own work (sending pre-encoded bodies, reading the answers), "
            "which takes the same cores the service runs on. The JSON-answers client asks for the endpoint's "
            "default JSON instead of `.npy`; most of its extra CPU per image is its own `json.loads` of the "
            "answers, on those cores too.",
            f"The second table is the serving overhead process by process: CPU time per image while the "
            f"{CLIENTS}-in-flight client ran (all rounds), against the worker children's own decode + "
            "forward. The overhead comes out of the forward passes' time on these cores. It is mostly the "
            "API's per-request work (multipart parsing, the Celery send, the answer), the same as when the "
            "children ran the sub-net as extracted; with the prepared copy (last table) their work per image "
            "is about half, so the same overhead is about twice the share of it.",
            "The last table is why the worker runs a prepared copy of the sub-net (`sdr_model.inference_subnet`: "
            "BatchNorm folded into the convolutions, weights channels_last): one forward of the sub-net as "
            "extracted (the weights endpoint's file) against the prepared copy, one torch thread, alternating "
            f"{PREPARED_REPEATS} times. On the CPU, PyTorch's max-pool over NCHW activations is scalar code, and "
            "an eval BatchNorm is one more pass over every activation. The local layouts above run the prepared "
            "copy too, so the endpoint is held to the same model.",
            f"Request batching: with {SINGLE_CLIENTS} single-image requests in flight, one worker task "
            f"answered {requests / tasks:.1f} requests on average (one task per sub-net in flight, "
            "`SDR_FEATURE_TASKS_IN_FLIGHT=1`, the default); the requests arriving while it ran went together in "
            f"the next. That is {rate[SINGLES_BATCHED] / rate[SINGLES_ALONE]:.1f}x the images/s of one task per "
            "request. Still far below batched requests: every request keeps its own HTTP parse, answer and share "
            "of the API's CPU, on the same two cores.",
        ],
        goals=[
            Goal(
                f"batched endpoint, {CLIENTS} requests in flight, at least {GOAL:.0%} of the fastest local run",
                ratio[CONCURRENT] >= GOAL,
            )
        ],
    )
