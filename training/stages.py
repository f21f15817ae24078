"""The four stages of `sdr train all`, each resumable from its own folder of the run directory.

    baseline     phase 0 of algorithm 1: SimSiam/BYOL on W0 over the whole set   -> baseline/
    cluster      eq. 2 on the baseline's W0 features, cluster -> path mapping    -> cluster/
    progressive  phases 1..4: W0 w.p. rho, else a sub-net on its cluster, SiamKD -> progressive/
    calibrate    BN statistics of W0 and all 256 paths; final checkpoint         -> supernet.safetensors

A stage whose output exists is skipped; one that stopped part-way continues from its last save.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from sklearn.metrics import normalized_mutual_info_score

from sdr_model.atomic_write import write_text_atomic
from sdr_model.checkpoint import save_checkpoint
from sdr_model.paths import all_paths, phase_paths
from training.calibrate import bn_calibration_mode, calibrate_network, finish_calibration
from training.cluster_mapping import cluster_paths
from training.clusters import Clusters
from training.data import StepLoader, eval_transform, step_generator
from training.features import extract_features
from training.kmeans import faiss_kmeans
from training.methods import build_method
from training.progressive import PhaseSchedule, mixed_pool, sample_path
from training.prototype_clustering import assign_balanced, train_prototypes
from training.run import FINAL_CHECKPOINT, STAGE_CODES, Run
from training.ssl_method import SSLMethod
from training.state import load_state, save_state, state_exists
from training.trainer import MIX_DRAW, StepPlan, build_distill, train_ssl

__all__ = ["STAGES", "StageError", "run_stage"]

STAGES = ("baseline", "cluster", "progressive", "calibrate")
_DONE = "done.json"
_CALIBRATION_SAVE_EVERY = 16  # networks between calibration checkpoints


class StageError(RuntimeError):
    """A stage that cannot run yet or with this data; says what to run or change."""


def run_stage(run: Run, stage: str) -> None:
    """Run `stage` (or all four for "all"), skipping finished stages."""
    for name in STAGES if stage == "all" else (stage,):
        {"baseline": _baseline, "cluster": _cluster, "progressive": _progressive, "calibrate": _calibrate}[name](run)


# --- baseline -------------------------------------------------------------------------------------


def _baseline(run: Run) -> None:
    directory = run.stage_dir("baseline")
    if _finished(run, "baseline"):
        return
    cfg = run.config.baseline
    method = _method(run)
    n = len(run.source)
    steps = math.ceil(cfg.epochs * math.ceil(n / cfg.batch_size))
    pool = torch.arange(n)
    summary = train_ssl(run, "baseline", method, steps, cfg.batch_size, lambda step, g: StepPlan(None, pool, 0))
    _mark_done(run, directory, {**summary, "epochs": cfg.epochs, "images": n})


# --- cluster --------------------------------------------------------------------------------------


def _cluster(run: Run) -> None:
    directory = run.stage_dir("cluster")
    if _finished(run, "cluster"):
        return
    _require(run, "baseline")
    if run.dist.is_main:  # one process clusters; the others wait (a few minutes at most)
        method = _method(run)
        load_state(run.stage_dir("baseline"), method, None, run.dist.device)
        _clusters_from(run, method).save(directory)
    run.dist.barrier()


def _clusters_from(run: Run, method: SSLMethod) -> Clusters:
    cfg, mc = run.config.cluster, run.model_config
    k = mc.num_paths
    started = time.perf_counter()
    features, readable = extract_features(
        method.backbone,
        run.source,
        run.preprocessing,
        cfg.feature_batch_size,
        run.dist.device,
        run.config.data.num_workers,
        run.progress,
    )
    f = features[readable]  # [M, D] decodable images only
    if len(f) < 2 * k:
        raise StageError(f"{len(f)} readable images cannot give {k} clusters two images each; use more data")
    g = step_generator(run.config.seed, STAGE_CODES["cluster"])
    if cfg.method == "sinkhorn":
        prototypes = train_prototypes(f, k, cfg, g, run.progress)
        cluster = assign_balanced(f, prototypes, cfg.assign_eps, cfg.assign_iters)
    else:
        prototypes, cluster = faiss_kmeans(f, k, cfg.kmeans_iters, run.config.seed)
    labels = run.source.labels[readable] if run.source.labels is not None else None
    report: dict[str, Any] = {
        "method": cfg.method,
        "mapping": cfg.mapping,
        "num_paths": k,
        "num_stages": mc.num_stages,
        "num_groups": mc.num_groups,
        "images": len(run.source),
        "unreadable_images": int((~readable).sum()),
    }
    report["cluster"] = _describe(cluster, k, labels)
    if cfg.compare_kmeans and cfg.method != "kmeans":
        report["kmeans"] = _describe(faiss_kmeans(f, k, cfg.kmeans_iters, run.config.seed)[1], k, labels)
    if cfg.mapping == "random":  # the random-split ablation: equal random subsets, clusters unused
        order = torch.randperm(len(f), generator=g)
        path_of_image = torch.empty(len(f), dtype=torch.long)
        path_of_image[order] = torch.arange(len(f)) % k
    else:
        paths = cluster_paths(cfg.mapping, prototypes, mc.num_stages, mc.num_groups, run.config.seed)
        path_id = torch.tensor([int(p, mc.num_groups) for p in paths])
        path_of_image = path_id[cluster]
        prototypes = prototypes[torch.argsort(path_id)]  # row i = prototype of path id i
    path_ids = torch.full((len(run.source),), -1, dtype=torch.long)
    path_ids[readable] = path_of_image
    report["split"] = _describe(path_of_image, k, labels)
    report["seconds"] = time.perf_counter() - started
    return Clusters(path_ids, prototypes, report)


def _describe(assignment: torch.Tensor, k: int, labels: torch.Tensor | None) -> dict[str, Any]:
    sizes = torch.bincount(assignment, minlength=k)
    out: dict[str, Any] = {"min_size": int(sizes.min()), "max_size": int(sizes.max()), "sizes": sizes.tolist()}
    if labels is not None:
        out["nmi"] = float(normalized_mutual_info_score(labels.numpy(), assignment.numpy()))
    return out


# --- progressive ----------------------------------------------------------------------------------


def _progressive(run: Run) -> None:
    directory = run.stage_dir("progressive")
    if _finished(run, "progressive"):
        return
    _require(run, "cluster")
    cfg, mc = run.config.progressive, run.model_config
    clusters = Clusters.load(run.stage_dir("cluster"))
    schedule = PhaseSchedule(cfg.phase_steps)
    used = {
        p
        for phase, steps in enumerate(cfg.phase_steps, 1)
        if steps
        for p in phase_paths(phase, mc.num_stages, mc.num_groups)
    }
    members = {path: clusters.members(path) for path in sorted(used)}
    small = [p for p, m in members.items() if len(m) < 2]
    if small:  # BatchNorm needs two images (only k-means can get here: Sinkhorn assigns two or more)
        raise StageError(f"paths {small[:8]} have fewer than two images; use more data or cluster.method: sinkhorn")
    whole = clusters.readable()
    pools = {path: _path_pool(run, path, m, whole) for path, m in members.items()}
    method = _method(run)
    if not state_exists(directory):  # progressive training starts from the baseline's weights
        load_state(run.stage_dir("baseline"), method, None, run.dist.device)

    def plan(step: int, g: torch.Generator) -> StepPlan:
        phase = schedule.phase(step)
        path = sample_path(g, cfg.rho, phase, mc.num_stages, mc.num_groups)
        return StepPlan(path, whole if path is None else pools[path], phase)

    summary = train_ssl(
        run, "progressive", method, schedule.total_steps, cfg.batch_size, plan, build_distill(cfg.distill), cfg.lam
    )
    _mark_done(run, directory, {**summary, "phase_steps": list(cfg.phase_steps), "phase_starts": schedule.starts})


# --- calibrate ------------------------------------------------------------------------------------


def _calibrate(run: Run) -> None:
    final = run.run_dir / FINAL_CHECKPOINT
    if _finished(run, "calibrate"):
        return
    _require(run, "progressive")
    if run.dist.is_main:
        _calibrate_and_save(run, final)
    run.dist.barrier()


def _calibrate_and_save(run: Run, final: Path) -> None:
    cfg, mc = run.config.calibrate, run.model_config
    directory = run.stage_dir("calibrate")
    clusters = Clusters.load(run.stage_dir("cluster"))
    method = _method(run)
    trained = "progressive" if state_exists(run.stage_dir("progressive")) else "baseline"
    load_state(run.stage_dir(trained), method, None, run.dist.device)
    backbone = method.backbone
    networks: list[str | None] = [None, *all_paths(mc.num_stages, mc.num_groups)]
    start = 0
    if state_exists(directory):
        start, _ = load_state(directory, backbone, None, run.dist.device)
    bn_calibration_mode(backbone, reset=start == 0)
    started = time.perf_counter()
    whole = clusters.readable()
    for i in range(start, len(networks)):
        path = networks[i]
        pool = whole if path is None else _path_pool(run, path, clusters.members(path), whole)
        batches = cfg.w0_batches if path is None else cfg.batches_per_path
        calibrate_network(backbone, path, _eval_batches(run, pool, batches, i))
        if (i + 1) % _CALIBRATION_SAVE_EVERY == 0 and i + 1 < len(networks):
            save_state(directory, i + 1, backbone, None, {})
    finish_calibration(backbone)
    save_checkpoint(
        final,
        backbone.cpu(),
        preprocessing=run.preprocessing,
        clusters={
            "mapping": clusters.mapping,
            "method": clusters.report["method"],
            "sizes": clusters.sizes(),
            "nmi": clusters.report["split"].get("nmi"),
        },
        provenance=_provenance(run, time.perf_counter() - started),
    )


def _path_pool(run: Run, path: str, members: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """The images `path` trains and calibrates on: its cluster `members`, plus `progressive.mix` of `whole`."""
    g = step_generator(run.config.seed, STAGE_CODES["progressive"], int(path, run.model_config.num_groups), MIX_DRAW)
    return mixed_pool(members, whole, run.config.progressive.mix, g)


def _eval_batches(run: Run, pool: torch.Tensor, batches: int, network: int) -> Iterator[torch.Tensor]:
    """Up to `batches` deterministic batches of `pool` (all of it if smaller), eval-transformed."""
    size = run.config.calibrate.batch_size
    g = step_generator(run.config.seed, STAGE_CODES["calibrate"], network)
    chosen = pool[torch.randperm(len(pool), generator=g)][: batches * size]
    if len(chosen) == 0:
        raise StageError(f"network {network} has no images to calibrate on")
    count = math.ceil(len(chosen) / size)
    loader = StepLoader(run.source, lambda b: chosen[b * size : (b + 1) * size], 0, count, run.config.data.num_workers)
    for _, batch in loader:
        if len(batch) >= 2:
            yield eval_transform(batch.images, run.preprocessing).to(run.dist.device)


def _provenance(run: Run, calibration_seconds: float) -> dict[str, Any]:
    baseline = json.loads((run.stage_dir("baseline") / _DONE).read_text())
    progressive = json.loads((run.stage_dir("progressive") / _DONE).read_text())
    cluster = Clusters.load(run.stage_dir("cluster")).report
    return {
        "trained": True,
        "preset": run.config.model,
        "ssl": run.config.ssl.method,
        "data_fingerprint": run.source.fingerprint(),
        "data": {
            "kind": run.config.data.kind,
            "root": run.config.data.root,
            "images": len(run.source),
            "unreadable_images": cluster["unreadable_images"],
        },
        "epochs": baseline["epochs"],
        "steps": {
            "baseline": baseline["steps"],
            "progressive": progressive["steps"],
            "phase_steps": progressive["phase_steps"],
        },
        "seconds": {
            "baseline": baseline["seconds"],
            "cluster": cluster["seconds"],
            "progressive": progressive["seconds"],
            "calibrate": calibration_seconds,
        },
        "world_size": run.dist.world_size,
        "seed": run.config.seed,
        "config": run.config.to_dict(),
    }


# --- helpers --------------------------------------------------------------------------------------


def _method(run: Run) -> SSLMethod:
    return build_method(run.new_backbone(), run.config.ssl).to(run.dist.device)


def _done_here(run: Run, stage: str) -> bool:
    """Whether this process sees `stage`'s output: clusters, the final checkpoint, or the stage's done marker."""
    if stage == "cluster":
        return Clusters.exists(run.stage_dir(stage))
    if stage == "calibrate":
        return (run.run_dir / FINAL_CHECKPOINT).is_file()
    return (run.stage_dir(stage) / _DONE).is_file()


def _require(run: Run, stage: str) -> None:
    if not _done_here(run, stage):
        raise StageError(f"stage {stage!r} has not finished in {run.run_dir}; run `sdr train {stage}` first")


def _finished(run: Run, stage: str) -> bool:
    """Whether the stage is finished for every process: they agree in one collective before any acts.

    The main process alone writes a stage's clusters or final checkpoint, quickly for a small
    recipe. A process that reached its check later could see the stage finished, skip the barrier
    its peers wait at, and leave the job hung on mismatched collectives.
    """
    return run.dist.all_min(int(_done_here(run, stage))) == 1


def _mark_done(run: Run, directory: Path, summary: dict[str, Any]) -> None:
    if run.dist.is_main:
        write_text_atomic(directory / _DONE, json.dumps(summary, indent=1))
    run.dist.barrier()
