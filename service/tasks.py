"""Celery tasks, run in worker processes only: ids in, one library call, result out.

Heavy imports (torch, the model, the routing engine) happen inside the functions, in the prefork
children, never in the worker's main process (see `service.worker`). Each child keeps the loaded
supernet and a few extracted sub-nets between tasks.

Route shards report progress and check the cancel flag between mini-batches through
`service.jobs.JobStore`, whose Lua transitions make redelivery harmless (see that module).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import signal
import traceback
from collections import OrderedDict
from functools import cache
from itertools import accumulate, pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError

from service.celery_app import TASK_EXTRACT_SUBNET, TASK_FEATURES, TASK_ROUTE_MERGE, TASK_ROUTE_SHARD
from service.jobs import JobStatus, JobStore, ShardStart, write_json_atomic
from service.redis_store import checkpoint_verdict_key, connect
from service.replies import send_reply
from service.settings import Settings, get_settings

if TYPE_CHECKING:
    import torch

    from sdr_model import CheckpointMetadata, SDRResNet
    from sdr_model.routing import RouteData, RouteOptions

__all__ = ["WARM_MODULES", "extract_subnet", "features", "route_merge", "route_shard", "warm_up"]

log = logging.getLogger(__name__)

_SUBNET_CACHE_SIZE = 8
# Imported by `warm_up`: what `features` and `extract_subnet` import inside their bodies. A cold
# child's first features request spent 2 s importing them (torchvision 1.6 s, timm 0.6 s).
WARM_MODULES = ("sdr_model.datasets.images", "sdr_model.extract", "sdr_model.inference")


class _Runtime:
    """Per-process state: settings, Redis, job store, and the loaded model (reloaded if the file changes)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = connect(settings, timeout=30.0)
        self.jobs = JobStore(self.redis, settings.data_dir)
        self._model_key: tuple[str, int, int] | None = None
        self._model: SDRResNet | None = None
        self._meta: CheckpointMetadata | None = None
        self._sha256 = ""
        self._subnets: OrderedDict[str, torch.nn.Module] = OrderedDict()
        self.route_data: tuple[str, RouteData] | None = None  # (job id, decoded dataset)

    @property
    def device(self) -> str:
        """`SDR_DEVICE`, with `auto` resolved once torch is imported (in a child, never the parent)."""
        import torch

        if self.settings.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.settings.device

    def model(self) -> tuple[SDRResNet, CheckpointMetadata, str]:
        """The supernet (eval mode), its header and its file digest, loaded once per file version."""
        from sdr_model import load_checkpoint

        file = self.settings.checkpoint_path
        st = file.stat()
        key = (str(file), st.st_mtime_ns, st.st_size)
        if self._model is None or self._model_key != key:
            model, meta = load_checkpoint(file, self.device)
            h = hashlib.sha256()
            with file.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._model, self._meta, self._sha256 = model, meta, h.hexdigest()
            self._model_key = key
            self._subnets.clear()
            self.route_data = None
            log.info("loaded %s (%s)", file, self._sha256[:12])
        assert self._meta is not None
        return self._model, self._meta, self._sha256

    def checked_model(self, expected_sha256: str) -> tuple[SDRResNet, CheckpointMetadata]:
        model, meta, sha = self.model()
        if expected_sha256 and sha != expected_sha256:
            raise _Refused(
                409,
                f"this worker serves checkpoint {sha[:12]} but the request was made against {expected_sha256[:12]}; "
                "API and workers must share SDR_CHECKPOINT (retry after they agree)",
            )
        return model, meta

    def subnet(self, path: str, expected_sha256: str) -> torch.nn.Module:
        """Sub-net `path` as the features task runs it: BN folded, channels_last (`inference_subnet`), cached."""
        from sdr_model import extract_subnet as extract
        from sdr_model import inference_subnet

        model, _ = self.checked_model(expected_sha256)
        if path not in self._subnets:
            self._subnets[path] = inference_subnet(extract(model, path))
            while len(self._subnets) > _SUBNET_CACHE_SIZE:
                self._subnets.popitem(last=False)
        self._subnets.move_to_end(path)
        return self._subnets[path]


class _Refused(Exception):
    """A request the worker answers with a 4xx (status, message)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@cache
def _runtime() -> _Runtime:
    return _Runtime(get_settings())


def warm_up() -> None:
    """Load and validate the checkpoint in this (child) process and record the verdict in Redis.

    `/readyz` reports ready only for a checkpoint digest that a worker has loaded successfully
    (`load_checkpoint` checks every tensor against the header's architecture); a refused file is
    recorded with its reason, which `/readyz` shows. The key is the file's digest, so a verdict
    never goes stale. Loading here also makes the first task fast, and so does importing what the
    request-bound tasks import (`WARM_MODULES`) before the child takes one.
    """
    rt = _runtime()
    file = rt.settings.checkpoint_path
    try:
        _, _, sha = rt.model()
    except Exception as exc:
        log.critical("checkpoint %s refused: %s", file, exc)
        digest = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else "missing"
        rt.redis.set(checkpoint_verdict_key(digest, valid=False), f"{type(exc).__name__}: {exc}")
        return
    for module in WARM_MODULES:
        importlib.import_module(module)
    rt.redis.set(checkpoint_verdict_key(sha, valid=True), str(file))


def _hostname(task: Any) -> str:
    return str(getattr(task.request, "hostname", None) or f"pid{os.getpid()}")


# --- weights and features (request-bound, `sdr.interactive` queue) -----------------------------


class _RequestTask(Task):
    """Answers the waiting API when a request-bound task fails before its own error handling.

    Each task replies from its own `try`, but an error before it (arguments the task does not take,
    from an API of another version during a rolling upgrade; a time limit) would leave the API
    waiting out `SDR_WAIT_TIMEOUT` for a reply that never comes. Celery calls `on_failure` with the
    task's arguments, so the reply goes out at once and names the error.
    """

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        reply_key = kwargs.get("reply_key") if isinstance(kwargs, dict) else None
        if not isinstance(reply_key, str):
            return
        detail = f"{self.name} failed before it could answer: {_error_text(exc)}"
        if isinstance(exc, TypeError):
            detail += " (do the API and the workers run the same version?)"
        send_reply(_runtime().redis, reply_key, {"ok": False, "status": 500, "detail": detail})


# The two request-bound tasks answer on their reply list (`service.replies`); storing the same
# answer again as a Celery result would be one more Redis write per request that nothing reads.
@shared_task(name=TASK_EXTRACT_SUBNET, bind=True, ignore_result=True, base=_RequestTask)
def extract_subnet(self: Any, path: str, checkpoint_sha256: str, output: str, reply_key: str) -> dict[str, Any]:
    """Write sub-net `path` to the shared cache file `output` (atomic) unless it is there already."""
    from sdr_model import save_subnet

    rt = _runtime()
    try:
        target = Path(output)
        if not target.is_file():
            model, meta = rt.checked_model(checkpoint_sha256)
            sizes = (meta.clusters or {}).get("sizes") or {}
            save_subnet(
                target,
                model,
                path,
                preprocessing=meta.preprocessing,
                provenance={"supernet_sha256": checkpoint_sha256, **meta.provenance},
                cluster_size=sizes.get(path),
            )
        reply: dict[str, Any] = {"ok": True, "file": output}
    except _Refused as exc:
        reply = {"ok": False, "status": exc.status, "detail": exc.detail}
    except Exception as exc:
        log.exception("extract_subnet %s failed", path)
        reply = {"ok": False, "status": 500, "detail": f"extraction failed: {type(exc).__name__}: {exc}"}
    send_reply(rt.redis, reply_key, reply)
    return {k: v for k, v in reply.items() if k != "file"}


@shared_task(name=TASK_FEATURES, bind=True, ignore_result=True, base=_RequestTask)
def features(
    self: Any, path: str, checkpoint_sha256: str, images: str, sizes: list[int], output: str, reply_key: str
) -> dict[str, Any]:
    """Embed the images staged back to back in `images` (`sizes` bytes each) with sub-net `path` into the .npy `output`.

    Checkpoint preprocessing, batched forward passes of `SDR_FEATURE_BATCH_SIZE`.
    """
    import numpy as np
    import torch

    from sdr_model.datasets.images import decode_images, normalize

    rt = _runtime()
    try:
        subnet = rt.subnet(path, checkpoint_sha256)
        _, meta = rt.checked_model(checkpoint_sha256)
        staged = Path(images).read_bytes()
        if sum(sizes) != len(staged):
            raise ValueError(f"{images} holds {len(staged)} bytes, the request said {sum(sizes)}")
        offsets = [0, *accumulate(sizes)]
        blobs = [staged[start:end] for start, end in pairwise(offsets)]
        decoded = decode_images(blobs, meta.preprocessing, num_threads=1)
        if decoded.skipped:
            reply: dict[str, Any] = {
                "ok": False,
                "status": 400,
                "unreadable": sorted(set(range(len(blobs))) - set(decoded.source_index.tolist())),
                "detail": "; ".join(s.reason for s in decoded.skipped),
            }
        else:
            batch = rt.settings.feature_batch_size
            chunks = []
            with torch.inference_mode():
                for start in range(0, len(decoded.pixels), batch):
                    x = normalize(decoded.pixels[start : start + batch].to(rt.device), meta.preprocessing)
                    chunks.append(subnet(x).float().cpu().numpy())  # [B, D] pooled features (num_classes=0)
            embeddings = np.concatenate(chunks).astype(np.float32)
            np.save(output, embeddings)  # transient: the API reads it only after this task's reply
            reply = {"ok": True, "shape": list(embeddings.shape)}
    except _Refused as exc:
        reply = {"ok": False, "status": exc.status, "detail": exc.detail}
    except Exception as exc:
        log.exception("features %s failed", path)
        reply = {"ok": False, "status": 500, "detail": f"feature extraction failed: {type(exc).__name__}: {exc}"}
    send_reply(rt.redis, reply_key, reply)
    return {k: v for k, v in reply.items() if k != "unreadable"}


# --- route shards (`sdr.route` queue) -----------------------------------------------------------


def _route_options(options: dict[str, Any]) -> RouteOptions:
    """The library's options from the job's request (unset fields keep the library defaults)."""
    from sdr_model.routing import RouteOptions

    chosen = {k: options[k] for k in ("scorer", "selection", "k", "seed") if options.get(k) is not None}
    return RouteOptions(**chosen)


def _route_data(rt: _Runtime, job_id: str, options: dict[str, Any], meta: CheckpointMetadata) -> RouteData:
    """The job's dataset decoded once per process (a worker running several shards reuses it)."""
    from sdr_model.datasets.labelled import read_dataset, read_manifest
    from sdr_model.routing import prepare_route_data

    if rt.route_data is not None and rt.route_data[0] == job_id:
        return rt.route_data[1]
    if options.get("manifest_file"):
        labelled = read_manifest(options["manifest_file"], allowed_roots=rt.settings.data_roots)
    else:
        root = rt.settings.data_dir / "datasets" / options["dataset_id"] / "data"
        labelled = read_dataset(root, allowed_roots=[root])
    data = prepare_route_data(labelled, meta.preprocessing, _route_options(options))
    rt.route_data = (job_id, data)
    return data


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _score_shard(rt: _Runtime, job_id: str, shard: int) -> dict[str, Any]:
    """The library call of one shard: `score_paths` (or the whole screened route, see `shard_paths`)."""
    from sdr_model.routing import score_paths
    from sdr_model.routing.screening import screened_route

    jobs = rt.jobs
    record = jobs.get(job_id)
    assert record is not None
    model, meta = rt.checked_model(record.options.get("checkpoint_sha256", ""))
    data = _route_data(rt, job_id, record.options, meta)
    options = _route_options(record.options)
    paths = jobs.shard_paths(job_id, shard)
    sub_paths = sum(p is not None for p in paths)

    def progress(done: int, total: int) -> None:  # library steps -> sub-net paths done
        jobs.report_progress(job_id, shard, int(sub_paths * done / total))

    def should_cancel() -> bool:
        return jobs.should_stop(job_id)

    if record.options.get("screen"):
        result = screened_route(model, data, options, device=rt.device, progress=progress, should_cancel=should_cancel)
        return {"route_result": result.to_dict()}
    return score_paths(
        model, data, paths, options, device=rt.device, progress=progress, should_cancel=should_cancel
    ).to_dict()


class _ShardTask(Task):
    """Fails the job when a shard ends outside the shard's own error handling.

    The hard limit kills the child, which cannot report anything; Celery calls `on_failure` in the
    worker's main process (torch-free) with the task's arguments, and acknowledges the message, so
    without this the shard would stay "running" for ever. The soft limit can also fire before
    `route_shard`'s `try` (a fresh child spends seconds importing the routing engine there); the
    task then fails in the child with `SoftTimeLimitExceeded` and the job would stay "queued".
    Any other error that escapes (the shard's result file cannot be written: disk full, a broken
    data dir) is acknowledged too and fails the job the same way. A killed child (`WorkerLostError`)
    is the one failure left alone: the broker redelivers it and `start_shard` counts deliveries.
    """

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if len(args) != 2:
            return
        job_id, shard = args
        limits = _runtime().settings
        if isinstance(exc, TimeLimitExceeded):
            error = (
                f"shard {shard} was killed at the hard time limit of {limits.task_time_limit} s (SDR_TASK_TIME_LIMIT)"
            )
        elif isinstance(exc, SoftTimeLimitExceeded):
            error = _soft_limit_error(shard, limits)
        elif isinstance(exc, WorkerLostError):
            return
        else:
            error = f"shard {shard} failed outside the routing engine: {_error_text(exc)}"
        _runtime().jobs.fail_shard(job_id, shard, error)


def _soft_limit_error(shard: int, settings: Settings) -> str:
    return f"shard {shard} exceeded the time limit of {settings.task_soft_time_limit} s (SDR_TASK_SOFT_TIME_LIMIT)"


# Test-only fault injection, off unless a worker's environment sets it (nothing in a deployment does).
FAULT_CRASH_PREFIX_ENV = "SDR_FAULT_INJECTION_CRASH_PREFIX"


def _fault_injection_crash(jobs: JobStore, job_id: str, shard: int) -> None:
    """With `SDR_FAULT_INJECTION_CRASH_PREFIX=<p>` set, a shard on prefix `p` SIGKILLs its own process.

    Lets tests/service/test_faults.py prove, with a real worker, that a shard which kills its worker
    on every delivery (as the OOM killer would) ends its job after `SDR_MAX_DELIVERIES` instead of
    looping for ever. Unset (always, outside that test) this is one environment lookup.
    """
    prefix = os.environ.get(FAULT_CRASH_PREFIX_ENV)
    if prefix is not None and jobs.r.hget(jobs.shard_key(job_id, shard), "prefix") == prefix:
        log.critical("fault injection: shard %d of %s (prefix %r) kills its process", shard, job_id, prefix)
        os.kill(os.getpid(), signal.SIGKILL)


@shared_task(name=TASK_ROUTE_SHARD, bind=True, base=_ShardTask)
def route_shard(self: Any, job_id: str, shard: int) -> dict[str, Any]:
    """Score one prefix subtree of a route job; the last shard to finish queues the merge."""
    from sdr_model.routing import RouteCancelled

    rt = _runtime()
    jobs = rt.jobs
    worker = _hostname(self)
    outcome = jobs.start_shard(job_id, shard, rt.settings.max_deliveries, worker)
    if outcome in (ShardStart.JOB_OVER, ShardStart.EXHAUSTED):
        return {"job_id": job_id, "shard": shard, "outcome": outcome.value}
    if outcome is ShardStart.RUN:
        try:
            _fault_injection_crash(jobs, job_id, shard)
            partial = _score_shard(rt, job_id, shard)
        except RouteCancelled:
            return {"job_id": job_id, "shard": shard, "outcome": "stopped"}
        except SoftTimeLimitExceeded:
            jobs.fail_shard(job_id, shard, _soft_limit_error(shard, rt.settings))
            return {"job_id": job_id, "shard": shard, "outcome": "timeout"}
        except _Refused as exc:
            jobs.fail_shard(job_id, shard, exc.detail)
            return {"job_id": job_id, "shard": shard, "outcome": "failed"}
        except Exception as exc:  # a library error is deterministic: a retry would fail the same way
            log.error("route %s shard %d failed:\n%s", job_id, shard, traceback.format_exc())
            jobs.fail_shard(job_id, shard, _error_text(exc))
            return {"job_id": job_id, "shard": shard, "outcome": "failed"}
        write_json_atomic(jobs.shard_result_path(job_id, shard), partial)
        jobs.finish_shard(job_id, shard, worker)
    # RUN finished, or ALREADY_DONE (an earlier delivery finished but its ack was lost): make sure
    # the merge is queued once every shard has succeeded. A second merge is a no-op.
    if jobs.all_shards_succeeded(job_id):
        self.app.send_task(TASK_ROUTE_MERGE, args=[job_id])
    return {"job_id": job_id, "shard": shard, "outcome": "succeeded"}


@shared_task(name=TASK_ROUTE_MERGE, bind=True)
def route_merge(self: Any, job_id: str) -> dict[str, Any]:
    """`merge_scores` over the shards' files; write the result, then mark the job succeeded."""
    from sdr_model.routing import ShardResult, merge_scores

    rt = _runtime()
    jobs = rt.jobs
    record = jobs.get(job_id)
    if record is None or record.status.terminal:
        return {"job_id": job_id, "outcome": "skipped"}
    try:
        partials = [json.loads(jobs.shard_result_path(job_id, i).read_text()) for i in range(len(record.shards))]
        if len(partials) == 1 and "route_result" in partials[0]:  # a screened route: one shard did it all
            result = partials[0]["route_result"]
        else:
            result = merge_scores([ShardResult.from_dict(p) for p in partials]).to_dict()
    except Exception as exc:
        log.error("route %s merge failed:\n%s", job_id, traceback.format_exc())
        jobs.finish(job_id, JobStatus.FAILED, f"merging the shards failed: {_error_text(exc)}")
        return {"job_id": job_id, "outcome": "failed"}
    write_json_atomic(jobs.result_path(job_id), result)
    jobs.finish(job_id, JobStatus.SUCCEEDED)
    return {"job_id": job_id, "outcome": "succeeded"}
