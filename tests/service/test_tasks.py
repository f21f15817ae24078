"""`service.tasks` in a process of its own, as a prefork child runs it (no Celery worker around it)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from service.embedded import EmbeddedRedis
from service.settings import Settings
from tests.service.support import REPO, make_image, settings_env

# Packages whose import takes a cold child seconds; cheap lazy imports (Pillow's plugins) may stay late.
_SLOW_TO_IMPORT = {"torch", "torchvision", "timm", "safetensors", "sdr_model"}
# A child's life: `warm_up` (what `worker_process_init` calls), then its first request of each kind.
_FIRST_REQUESTS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from service import tasks

    tasks.warm_up()
    before = set(sys.modules)
    staged, work = Path(sys.argv[1]), Path(sys.argv[2])
    sha = tasks._runtime().model()[2]
    features = tasks.features.run(
        "0123", sha, str(staged), [staged.stat().st_size], str(work / "embeddings.npy"), "test:tasks:features"
    )
    weights = tasks.extract_subnet.run("0123", sha, str(work / "0123.safetensors"), "test:tasks:weights")
    print(json.dumps({"features": features, "weights": weights, "imported": sorted(set(sys.modules) - before)}))
    """
)


def test_a_warmed_up_child_imports_nothing_for_its_first_requests(
    settings: Settings, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """What the request-bound tasks import is imported by `warm_up`, before the child takes a request.

    Otherwise the first features request of every child paid 2 s for torchvision and timm.
    """
    png = io.BytesIO()
    make_image(0, seed=1).save(png, format="PNG")
    staged = tmp_path / "images.bin"
    staged.write_bytes(png.getvalue())
    run = subprocess.run(
        [sys.executable, "-c", _FIRST_REQUESTS, str(staged), str(tmp_path)],
        env=settings_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcome["features"]["ok"] is True and outcome["features"]["shape"][0] == 1, outcome
    assert outcome["weights"]["ok"] is True and (tmp_path / "0123.safetensors").is_file(), outcome
    late = [m for m in outcome["imported"] if m.split(".")[0] in _SLOW_TO_IMPORT]
    assert late == [], (
        f"{late[:6]} (of {len(late)}) imported by a warm child's first requests; add them to tasks.WARM_MODULES"
    )
