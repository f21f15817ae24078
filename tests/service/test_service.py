"""End-to-end tests of the routing service against a real Redis and real worker subprocesses."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.service.support import (
    CLASSES,
    REPO,
    WorkerProc,
    make_image,
    png_bytes,
    settings_env,
    wait_for_job,
    write_image_tree,
    zip_tree,
)

# --- the API process stays torch-free -----------------------------------------------------------


def test_api_process_never_imports_torch(settings: Settings) -> None:
    """Build the app and the `sdr` parser (what `sdr serve` does) in a fresh interpreter.

    On failure the message names the import chain (the first project module that pulled it in).
    """
    code = (
        "import sys, traceback\n"
        "culprits = []\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('torch', 'torchvision', 'timm', 'faiss') and not culprits:\n"
        "            culprits.append(' <- '.join(f'{f.filename.split(\"/work/main/\")[-1]}:{f.lineno}'\n"
        "                for f in reversed(traceback.extract_stack()) if 'importlib' not in f.filename)[:600])\n"
        "        return None\n"
        "sys.meta_path.insert(0, Spy())\n"
        "from sdr_model.cli import build_parser\n"
        "build_parser()\n"
        "from service.app import create_app\n"
        "create_app().openapi()\n"
        "print(culprits[0] if culprits else '')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=settings_env(settings), cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"the API process imported a heavy module via: {out.stdout.strip()}"


# --- datasets ------------------------------------------------------------------------------------


def test_upload_validates_and_reupload_gives_same_id(
    client: TestClient, dataset_archive: bytes, dataset_id: str
) -> None:
    r = client.post("/datasets", files={"file": ("again.zip", dataset_archive, "application/zip")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == dataset_id and body["existing"] is True
    assert body["classes"] == sorted(CLASSES)
    assert body["counts"] == {"test": {c: 3 for c in CLASSES}, "train": {c: 8 for c in CLASSES}}
    assert client.get(f"/datasets/{dataset_id}").json()["id"] == dataset_id


def test_upload_names_unreadable_images(client: TestClient, service_dir: Path) -> None:
    root = write_image_tree(service_dir / "with-bad", per_class=(3, 1), seed=3)
    (root / "train" / "blobs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = client.post("/datasets", files={"file": ("bad.zip", zip_tree(root), "application/zip")})
    assert r.status_code == 201, r.text
    assert r.json()["unreadable"] == ["train/blobs/broken.png"]
    assert r.json()["counts"]["train"]["blobs"] == 3


def test_upload_refuses_unsafe_archive_and_stores_nothing(client: TestClient, settings: Settings) -> None:
    before = sorted(p.name for p in (settings.data_dir / "datasets").iterdir())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train/a/ok.png", png_bytes(make_image(0, 1)))
        zf.writestr("../evil.png", png_bytes(make_image(1, 2)))
    r = client.post("/datasets", files={"file": ("evil.zip", buf.getvalue(), "application/zip")})
    assert r.status_code == 400
    assert "../evil.png" in r.json()["detail"]
    assert sorted(p.name for p in (settings.data_dir / "datasets").iterdir()) == before
    assert not list((settings.data_dir / "tmp").glob("upload-*"))


def test_upload_refuses_non_archive(client: TestClient) -> None:
    r = client.post("/datasets", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 400 and "notes.txt" in r.json()["detail"]


# --- route jobs ----------------------------------------------------------------------------------


def _ranking(result: dict[str, object]) -> list[tuple[str, float]]:
    return [(p["path"], p["accuracy"]) for p in result["paths"]]  # type: ignore[index,union-attr]


@pytest.mark.slow
def test_route_equals_library_route(
    one_worker_route: dict[str, object], dataset_archive: bytes, checkpoint: Path, service_dir: Path
) -> None:
    from sdr_model.routing import route

    job = one_worker_route
    assert job["progress"] == {"done": 256, "total": 256}
    result = job["result"]
    assert isinstance(result, dict)
    archive = service_dir / "library-route.zip"
    archive.write_bytes(dataset_archive)
    expected = route(checkpoint, archive, "knn").to_dict()
    assert result["best"]["path"] == expected["best"]["path"]
    assert result["best"]["accuracy"] == pytest.approx(expected["best"]["accuracy"])
    assert result["supernet"]["accuracy"] == pytest.approx(expected["supernet"]["accuracy"])
    assert _ranking(result) == [(p, pytest.approx(a)) for p, a in _ranking(expected)]
    assert {s["worker"] for s in job["shards"]} == {"w1@test"}  # type: ignore[union-attr]


@pytest.mark.slow
def test_two_workers_share_one_route(
    client: TestClient, settings: Settings, dataset_id: str, one_worker_route: dict[str, object], service_dir: Path
) -> None:
    second = WorkerProc(settings, "w2", service_dir)
    try:
        second.wait_ready()
        r = client.post("/route", json={"dataset_id": dataset_id, "scorer": "knn"})
        assert r.status_code == 202
        job = wait_for_job(client, r.json()["job_id"])
    finally:
        second.stop()
    assert job["status"] == "succeeded", job
    workers = {s["worker"] for s in job["shards"]}  # type: ignore[union-attr]
    assert workers == {"w1@test", "w2@test"}, job["shards"]
    assert all(s["deliveries"] == 1 and s["done"] == s["total"] for s in job["shards"])  # type: ignore[union-attr]
    assert _ranking(job["result"]) == _ranking(one_worker_route["result"])  # type: ignore[arg-type]
    assert job["result"]["best"] == one_worker_route["result"]["best"]  # type: ignore[index]


def test_route_unknown_dataset_is_404(client: TestClient) -> None:
    r = client.post("/route", json={"dataset_id": "ds_000000000000000000000000"})
    assert r.status_code == 404
    assert "ds_000000000000000000000000" in r.json()["detail"]


def test_route_needs_exactly_one_source(client: TestClient, dataset_id: str) -> None:
    r = client.post("/route", json={"scorer": "knn"})
    assert r.status_code == 422 and "dataset_id" in json.dumps(r.json())
    r = client.post("/route", json={"dataset_id": dataset_id, "paths": ["0412"]})
    assert r.status_code == 400 and "0412" in r.json()["detail"]


def test_unknown_job_is_404(client: TestClient) -> None:
    assert client.get("/route/" + "0" * 32).status_code == 404
    assert client.get("/route/not-a-job").status_code == 404
    assert client.delete("/route/" + "0" * 32).status_code == 404


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/etc/passwd", "outside"), ("http://example.com/a.png", "URL"), ("relative/a.png", "absolute")],
)
def test_manifest_paths_outside_roots_are_400(
    client: TestClient, data_root: Path, path: str, reason: str, settings: Settings
) -> None:
    jobs_before = len(list((settings.data_dir / "jobs").iterdir()))
    good = sorted((data_root / "train" / CLASSES[0]).iterdir())[0]
    manifest = [
        {"path": str(good), "label": CLASSES[0], "split": "train"},
        {"path": path, "label": CLASSES[1], "split": "train"},
    ]
    r = client.post("/route", json={"manifest": manifest})
    assert r.status_code == 400, r.text
    assert path in r.json()["detail"] and reason in r.json()["detail"]
    assert len(list((settings.data_dir / "jobs").iterdir())) == jobs_before
    assert not list((settings.data_dir / "tmp").glob("manifest-*"))  # the probe's staging folder is gone


def test_manifest_missing_file_is_400(client: TestClient, data_root: Path) -> None:
    missing = str(data_root / "train" / "nope.png")
    r = client.post("/route", json={"manifest": [{"path": missing, "label": "x"}]})
    assert r.status_code == 400 and missing in r.json()["detail"]


def test_route_inline_manifest_on_a_path_subset(client: TestClient, data_root: Path) -> None:
    manifest = [
        {"path": str(p), "label": p.parent.name, "split": split}
        for split in ("train", "test")
        for p in sorted((data_root / split).rglob("*.png"))
    ]
    r = client.post("/route", json={"manifest": manifest, "paths": ["0000", "3333", "1203"], "k": 5})
    assert r.status_code == 202, r.text
    job = wait_for_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"done": 3, "total": 3}
    assert sorted(p["path"] for p in job["result"]["paths"]) == ["0000", "1203", "3333"]  # type: ignore[index]


def test_cancel_stays_cancelled(client: TestClient, dataset_id: str) -> None:
    r = client.post("/route", json={"dataset_id": dataset_id, "seed": 5})
    job_id = r.json()["job_id"]
    d = client.delete(f"/route/{job_id}")
    assert d.status_code == 200 and d.json()["status"] == "cancelled"
    assert client.delete(f"/route/{job_id}").json()["status"] == "cancelled"  # idempotent
    time.sleep(3)  # let the worker pick up (and drop) the shards
    body = client.get(f"/route/{job_id}").json()
    assert body["status"] == "cancelled" and body["result"] is None
    assert all(s["status"] != "succeeded" for s in body["shards"])


# --- sub-nets, weights and features ---------------------------------------------------------------


def test_subnets_listing(client: TestClient) -> None:
    body = client.get("/subnets").json()
    assert len(body["subnets"]) == 256 and body["trained"] is False
    one = client.get("/subnets/0312").json()
    assert one["id"] == 54 and one["feature_dim"] == body["subnets"][54]["feature_dim"]
    assert client.get("/subnets/54").json()["path"] == "0312"


@pytest.mark.parametrize("path", ["0412", "00000", "256", "abcd"])
def test_unknown_subnet_is_404(client: TestClient, path: str) -> None:
    for r in (client.get(f"/subnets/{path}"), client.get(f"/subnets/{path}/weights")):
        assert r.status_code == 404 and "detail" in r.json()


def test_subnet_params_match_timm(client: TestClient, checkpoint: Path) -> None:
    from sdr_model import extract_subnet, load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    subnet = extract_subnet(model, "0312")
    info = client.get("/subnets/0312").json()
    assert info["params"] == sum(p.numel() for p in subnet.parameters())
    assert client.get("/subnets").json()["supernet_params"] == sum(p.numel() for p in model.parameters())


_TIMM_ONLY = r"""
import io, json, struct, sys
import numpy as np, timm.models.resnet as R, torch
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import load_file
weights, out = sys.argv[1], sys.argv[2]
with open(weights, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(json.loads(f.read(n))["__metadata__"]["sdr"])
kw = dict(header["timm_kwargs"]); kw["block"] = getattr(R, kw["block"])
model = R.ResNet(**kw); model.load_state_dict(load_file(weights), strict=True); model.eval()
pp = header["preprocessing"]
xs = []
for name in sys.argv[3:]:
    img = Image.open(name); img.load(); img = img.convert("L" if pp["channels"] == 1 else "RGB")
    img = TF.resize(img, [pp["resize"]], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    img = TF.center_crop(img, [pp["input_size"]])
    x = TF.pil_to_tensor(img).float() / 255.0
    xs.append((x - torch.tensor(pp["mean"]).view(-1, 1, 1)) / torch.tensor(pp["std"]).view(-1, 1, 1))
with torch.no_grad():
    np.save(out, model(torch.stack(xs)).numpy())
assert "sdr_model" not in sys.modules and "service" not in sys.modules
"""


def test_downloaded_weights_in_timm_match_features_endpoint(client: TestClient, service_dir: Path) -> None:
    r = client.get("/subnets/0312/weights")
    assert r.status_code == 200
    assert 'filename="sdr_tiny_test-0312.safetensors"' in r.headers["content-disposition"]
    etag = r.headers["etag"]
    weights = service_dir / "downloaded-0312.safetensors"
    weights.write_bytes(r.content)
    head = client.head("/subnets/0312/weights")
    assert head.status_code == 200 and head.headers["etag"] == etag and head.content == b""
    assert client.get("/subnets/0312/weights", headers={"If-None-Match": etag}).status_code == 304

    images = []
    for i in range(5):
        f = service_dir / f"feat-{i}.png"
        make_image(i % 3, 9000 + i, size=40 + 7 * i).save(f)
        images.append(f)
    files = [("files", (f.name, f.read_bytes(), "image/png")) for f in images]
    as_json = client.post("/subnets/0312/features", files=files)
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    api = np.asarray(as_json.json()["embeddings"], dtype=np.float32)
    assert as_json.json()["files"] == [f.name for f in images]
    as_npy = client.post("/subnets/0312/features", files=files, headers={"Accept": "application/x-npy"})
    assert as_npy.headers["content-type"] == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(as_npy.content), allow_pickle=False), api)

    out = service_dir / "timm-features.npy"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-c", _TIMM_ONLY, str(weights), str(out), *map(str, images)],
        check=True,
        cwd=service_dir,
        env=env,
    )
    timm_features = np.load(out)
    assert timm_features.shape == api.shape == (5, client.get("/subnets/0312").json()["feature_dim"])
    np.testing.assert_allclose(api, timm_features, atol=1e-5, rtol=0)


def test_features_limits_and_bad_images(client: TestClient) -> None:
    ok = png_bytes(make_image(0, 1))
    junk_between = [("files", ("a.png", ok)), ("files", ("b.png", b"junk")), ("files", ("c.png", ok))]
    r = client.post("/subnets/0000/features", files=junk_between)
    assert r.status_code == 400 and "b.png" in r.json()["detail"]
    assert "a.png" not in r.json()["detail"] and "c.png" not in r.json()["detail"]
    r = client.post("/subnets/0000/features", files=[("files", ("a.png", ok))] * 65)
    assert r.status_code in (400, 413) and "detail" in r.json()
    assert client.post("/subnets/0412/features", files=[("files", ("a.png", ok))]).status_code == 404


def test_a_task_that_fails_before_its_own_error_handling_still_answers(settings: Settings, worker: WorkerProc) -> None:
    """Arguments the task does not take (an API of another version): a reply naming the error, not a timeout."""
    from service.celery_app import TASK_FEATURES, create_celery
    from service.redis_store import connect
    from service.replies import call_worker

    stale = {"path": "0000", "checkpoint_sha256": "0" * 64, "files": ["a.png"], "output": "/nowhere.npy"}
    reply = call_worker(create_celery(settings), connect(settings), TASK_FEATURES, stale, timeout=30)
    assert reply["ok"] is False and reply["status"] == 500
    assert "TypeError" in reply["detail"] and "same version" in reply["detail"]


# --- health, metrics, auth -----------------------------------------------------------------------


def test_health(client: TestClient) -> None:
    assert client.get("/livez").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"broker": True, "worker": True, "checkpoint": True}


def test_readyz_is_503_without_checkpoint(settings: Settings, redis_server: object) -> None:
    from service.app import create_app

    broken = settings.model_copy(update={"checkpoint": settings.data_dir / "missing.safetensors"})
    with TestClient(create_app(broken)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["checkpoint"] is False
    assert "missing.safetensors" in r.json()["detail"]["checkpoint"]


def test_metrics(client: TestClient, one_worker_route: dict[str, object]) -> None:
    client.get("/route/" + "0" * 32)
    text = client.get("/metrics").text
    assert 'sdr_http_requests_total{method="GET",route="/route/{job_id}",status="404"}' in text
    assert "sdr_http_request_duration_seconds_bucket" in text
    assert 'sdr_route_jobs_finished{status="succeeded"}' in text
    assert 'sdr_queue_depth{queue="sdr.route"}' in text


def test_auth(settings: Settings, worker: WorkerProc, dataset_id: str) -> None:
    from service.app import create_app

    secured = settings.model_copy(update={"api_keys": ["k1", "k2"]})
    with TestClient(create_app(secured)) as c:
        for method, url in [
            ("get", "/subnets"),
            ("get", "/subnets/0000/weights"),
            ("get", "/metrics"),
            ("get", f"/datasets/{dataset_id}"),
            ("post", "/route"),
            ("get", "/route/" + "0" * 32),
            ("delete", "/route/" + "0" * 32),
            ("post", "/datasets"),
            ("post", "/subnets/0000/features"),
        ]:
            r = getattr(c, method)(url)
            assert r.status_code == 401, (method, url, r.status_code)
            assert "API key" in r.json()["detail"]
            bad = getattr(c, method)(url, headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401, (method, url)
        assert c.get("/subnets", headers={"Authorization": "Bearer k2"}).status_code == 200
        assert c.get("/livez").status_code == 200
        assert c.get("/readyz").status_code == 200


def test_openapi_has_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/datasets",
        "/route",
        "/route/{job_id}",
        "/subnets",
        "/subnets/{path}",
        "/subnets/{path}/weights",
        "/subnets/{path}/features",
        "/livez",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    assert "examples" in spec["components"]["schemas"]["RouteRequest"]


@pytest.mark.slow
def test_screened_route_equals_library(
    client: TestClient, dataset_id: str, dataset_archive: bytes, checkpoint: Path, service_dir: Path
) -> None:
    from sdr_model.routing import route

    r = client.post("/route", json={"dataset_id": dataset_id, "screen": True})
    job = wait_for_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert len(job["shards"]) == 1 and job["progress"] == {"done": 256, "total": 256}  # type: ignore[arg-type]
    result = job["result"]
    archive = service_dir / "library-screen.zip"
    archive.write_bytes(dataset_archive)
    expected = route(checkpoint, archive, "knn", screen=True).to_dict()
    assert result["screening"]["candidates"] == expected["screening"]["candidates"]  # type: ignore[index]
    assert _ranking(result) == [(p, pytest.approx(a)) for p, a in _ranking(expected)]  # type: ignore[arg-type]


@pytest.mark.parametrize("scorer", ["logme", "sfda", "gbc"])
def test_other_scorers_pass_through(client: TestClient, dataset_id: str, scorer: str) -> None:
    r = client.post("/route", json={"dataset_id": dataset_id, "scorer": scorer, "paths": ["0000", "2103"]})
    job = wait_for_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["scorer"] == scorer  # type: ignore[index]
    assert sorted(p["path"] for p in job["result"]["paths"]) == ["0000", "2103"]  # type: ignore[index]


@pytest.mark.slow
def test_readyz_reports_a_checkpoint_that_does_not_match_its_header(
    settings: Settings, worker: WorkerProc, checkpoint: Path, service_dir: Path
) -> None:
    """Tensors of another architecture under a valid sdr_tiny header: a worker refuses it, /readyz says why."""
    import json as _json
    import struct

    import torch

    from sdr_model import create_model, default_preprocessing, save_checkpoint
    from service.app import create_app

    other = service_dir / "other-arch.safetensors"
    torch.manual_seed(1)
    save_checkpoint(
        other, create_model("sdr_tiny", depths=(1, 2, 1, 1)), preprocessing=default_preprocessing("sdr_tiny")
    )
    raw = other.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = _json.loads(raw[8 : 8 + n])
    good = _json.loads(checkpoint.read_bytes()[8 : 8 + struct.unpack("<Q", checkpoint.read_bytes()[:8])[0]])
    header["__metadata__"]["sdr"] = good["__metadata__"]["sdr"]  # claims the real sdr_tiny architecture
    text = _json.dumps(header).encode()
    bad = service_dir / "mismatched.safetensors"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])

    wrong = settings.model_copy(update={"checkpoint": bad})
    refusing = WorkerProc(wrong, "w-bad", service_dir, queues="sdr.nothing")  # takes no real work
    try:
        refusing.wait_ready()
        deadline = time.monotonic() + 60
        with TestClient(create_app(wrong)) as c:
            while True:
                r = c.get("/readyz")
                if "refused" in r.json()["detail"].get("checkpoint", "") or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    finally:
        refusing.stop()
    assert r.status_code == 503 and r.json()["checks"]["checkpoint"] is False
    assert "refused by a worker" in r.json()["detail"]["checkpoint"], r.json()
