"""Reproduce the evidence table of docs/MODEL_CARD.md: does routing beat the supernet W0?

For every checkpoint variant (the shipped one and each ablation that has been trained) and every
downstream task of `docs/evidence/tasks.py`: W0's kNN test accuracy; the routed path, chosen by
leave-one-out kNN on the task's train split without looking at test, and its test accuracy; the
gain over W0 with its paired-bootstrap interval; the tie set; the spread of test accuracy over
the 256 paths. Writes `docs/evidence/results.json`, `docs/evidence/RESULTS.md` and one gain
histogram per task and variant under `docs/figures/`.

    make evidence        # = .venv/bin/python -m docs.evidence.run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from docs.evidence.tasks import TASKS, build_task

DOCS = Path(__file__).resolve().parent.parent
# variant name -> (checkpoint, what it is). Missing files are reported as "not trained".
VARIANTS: dict[str, tuple[str, str]] = {
    "sdr": ("checkpoints/sdr_tiny_fmnist.safetensors", "shipped: clusters + progressive SiamKD"),
    "random_split": ("runs/ablation_random/supernet.safetensors", "ablation (a): random splits instead of clusters"),
    "simsiam_w0": ("runs/ablation_w0/supernet.safetensors", "ablation (b): SimSiam on W0 alone, same steps"),
    "l2_distill": ("runs/ablation_l2/supernet.safetensors", "ablation (c): L2 distillation instead of SiamKD"),
    # Investigations of "clusters beat random splits" (docs/MODEL_CARD.md, "What was tried").
    "aligned": ("runs/ablation_aligned/supernet.safetensors", "investigation: aligned cluster-to-path mapping"),
    "mixed_pool": ("runs/ablation_mix/supernet.safetensors", "investigation: half of each sub-net pool whole-set"),
    "aligned_mixed": ("runs/ablation_aligned_mix/supernet.safetensors", "investigation: aligned and mixed pools"),
}


def summarize(result: dict, task: str, variant: str) -> dict:
    accs = np.array([p["accuracy"] for p in result["paths"]])
    return {
        "variant": variant,
        "task": task,
        "w0": result["supernet"]["accuracy"],
        "w0_ci": result["supernet"]["accuracy_ci"],
        "routed_path": result["best"]["path"],
        "routed": result["best"]["accuracy"],
        "routed_ci": result["best"]["accuracy_ci"],
        "gain": result["gain"]["accuracy"],
        "gain_ci": result["gain"]["ci"],
        "ties": len(result["ties"] or []),
        "paths_mean": float(accs.mean()),
        "paths_std": float(accs.std()),
        "paths_min": float(accs.min()),
        "paths_max": float(accs.max()),
        "oracle_path": result["paths"][int(accs.argmax())]["path"],
        "images": result["dataset"],
        "route_seconds": result["timings"].get("total", float("nan")),
    }


def to_markdown(rows: list[dict]) -> str:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [
        "| variant | task | W0 | routed (path) | gain [95% CI] | ties | paths mean ± std | min / max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['task']} | {pct(r['w0'])} | {pct(r['routed'])} ({r['routed_path']}) | "
            f"{100 * r['gain']:+.1f} [{100 * r['gain_ci'][0]:+.1f}, {100 * r['gain_ci'][1]:+.1f}] | {r['ties']} | "
            f"{pct(r['paths_mean'])} ± {pct(r['paths_std'])} | {pct(r['paths_min'])} / {pct(r['paths_max'])} |"
        )
    by_variant: dict[str, list[dict]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    lines += [
        "",
        "| variant | tasks | mean W0 | mean routed | mean gain | tasks with gain >= 1 point | mean per-path std |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, rs in by_variant.items():
        mean = {key: float(np.mean([r[key] for r in rs])) for key in ("w0", "routed", "gain", "paths_std")}
        lines.append(
            f"| {variant} | {len(rs)} | {pct(mean['w0'])} | {pct(mean['routed'])} | {100 * mean['gain']:+.2f} | "
            f"{sum(r['gain'] >= 0.01 for r in rs)} / {len(rs)} | {pct(mean['paths_std'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    from sdr_model.routing import plot_gain_histogram, route

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help="which checkpoint variants to route")
    parser.add_argument("--tasks", nargs="*", default=[t.name for t in TASKS], help="which tasks")
    args = parser.parse_args()
    root = DOCS.parent
    figures = DOCS / "figures"
    figures.mkdir(exist_ok=True)
    rows, missing = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {t.name: build_task(t, Path(tmp)) for t in TASKS if t.name in args.tasks}
        for variant in args.variants:
            file, _ = VARIANTS[variant]
            if not (root / file).is_file():
                missing.append(variant)
                print(f"{variant}: {file} not trained yet; skipped")
                continue
            for task, folder in folders.items():
                start = time.perf_counter()
                result = route(str(root / file), folder)
                plot_gain_histogram(result, figures / f"gain_{variant}_{task}.png")
                rows.append(summarize(result.to_dict(), task, variant))
                r = rows[-1]
                print(
                    f"{variant:>12} {task:>16}: W0 {100 * r['w0']:.1f}  routed {r['routed_path']} "
                    f"{100 * r['routed']:.1f}  gain {100 * r['gain']:+.1f}  ({time.perf_counter() - start:.0f} s)"
                )
    out = DOCS / "evidence"
    # Rows of variants not routed this time are kept, so variants can be routed as they finish training.
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    routed = set(args.variants) - set(missing)
    kept = [r for r in previous.get("rows", []) if r["variant"] not in routed and r["variant"] in VARIANTS]
    order = {name: i for i, name in enumerate(VARIANTS)}
    rows = sorted(kept + rows, key=lambda r: order[r["variant"]])  # stable: task order within a variant
    missing = [v for v in VARIANTS if v not in {r["variant"] for r in rows}]
    (out / "results.json").write_text(json.dumps({"rows": rows, "not_trained": missing}, indent=2) + "\n")
    (out / "RESULTS.md").write_text(
        "# Evidence: routed sub-net vs the supernet W0\n\n"
        "Generated by `make evidence` (`docs/evidence/run.py`); accuracies in %, kNN (k=200) on each task's "
        "test split, which never influenced the pick.\n\n"
        + to_markdown(rows)
        + (f"\nNot trained (no checkpoint): {', '.join(missing)}\n" if missing else "")
    )
    print(to_markdown(rows))


if __name__ == "__main__":
    main()
