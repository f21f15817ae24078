"""Schemathesis over the OpenAPI spec (issue 8, row 14): no 5xx, every response matches its schema.

The spec is read from the running app (`/openapi.json`, over ASGI) of a private deployment: its
own data dir and embedded Redis, the session's checkpoint, auth on, and one real `sdr worker` that
takes only the `sdr.interactive` queue, so weights and features requests really run while a route
the fuzzer manages to queue waits on a private Redis that is thrown away afterwards: the fuzz run
never keeps a shared worker busy. (No endpoint fetches a URL: the one field that names files, an
inline manifest's `path`, is refused with 400 when it holds `://` or lies outside SDR_DATA_ROOTS.)

Every operation gets a bounded, derandomized set of generated requests (`MAX_EXAMPLES` per operation
and mode), and each response goes through all of schemathesis' default checks: not a server error,
status code and content type documented, headers and body conform to the declared schema, a
schema-valid request is not refused as invalid, a schema-violating one is, a missing or wrong key is
a 401. Operations are enumerated here rather than through `schema.parametrize()`, whose lazy
(fixture) form reads a private pytest attribute that pytest 9 no longer has; a test checks that
the list covers the spec.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core import NOT_SET
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.schemas import OpenApiSchema

from service.celery_app import INTERACTIVE_QUEUE
from service.settings import Settings
from tests.service.support import PrivateService, make_image, png_bytes, private_service, wait_until

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 12
API_KEY = "fuzz-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MULTIPART = "multipart/form-data"
# Negative cases need something to make invalid. These take no input at all (no parameter, no
# body, no key) ...
NO_INPUT = {("GET", "/livez"), ("GET", "/readyz")}
# ... and only these have something to make invalid besides the key: a body. The others take the
# key and at most free strings (an id, a sub-net path, If-None-Match); any string is schema-valid
# there, and an unknown one is a 404 by design.
WITH_BODY = {("POST", "/datasets"), ("POST", "/route"), ("POST", "/subnets/{path}/features")}
# positive: schema-valid requests with the key; negative: schema-violating ones, where the key may
# be what is missing or wrong (checks 401s); negative-keyed: the right key, a wrong parameter or body
# (checks 422s / 4xx, which a bad key would answer before validation).
MODES = ("positive", "negative", "negative-keyed")

OPERATIONS = [
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/datasets"),
    ("GET", "/datasets/{dataset_id}"),
    ("POST", "/route"),
    ("GET", "/route/{job_id}"),
    ("DELETE", "/route/{job_id}"),
    ("GET", "/subnets"),
    ("GET", "/subnets/{path}"),
    ("GET", "/subnets/{path}/weights"),
    ("HEAD", "/subnets/{path}/weights"),
    ("POST", "/subnets/{path}/features"),
]


@pytest.fixture(scope="module")
def fuzz_service(settings: Settings, service_dir: Path) -> Iterator[PrivateService]:
    """A deployment of its own, with a worker for the interactive queue only (no route worker)."""
    with private_service(settings, service_dir / "fuzz", wait_timeout=60, api_keys=[API_KEY]) as svc:
        worker = svc.worker("fuzz", queues=INTERACTIVE_QUEUE)
        try:
            # Ready means a worker child has loaded the checkpoint: until then /readyz is a 503.
            wait_until(lambda: svc.client.get("/readyz").status_code == 200, "fuzz deployment ready", timeout=180)
            yield svc
        finally:
            worker.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_service: PrivateService) -> OpenApiSchema:
    config = SchemathesisConfig.from_dict(
        {
            # The deployment runs with auth on, as a public one would: positive cases carry the key,
            # and `ignored_auth` checks that a missing or wrong key is a 401.
            "auth": {"openapi": {"HTTPBearer": {"bearer": API_KEY}}},
            "checks": {
                # A request the schema accepts must never be a 422 (the service's own validation
                # must be in the spec), but 400 is the service's answer for a well-formed request
                # about something that cannot be used: an archive or image that does not decode, a
                # path that is not a sub-net, a manifest file outside SDR_DATA_ROOTS. No schema can
                # say which random bytes are a zip; so 400 counts as a valid answer here.
                "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", 400, 401, 403, 404, 409, 413, 429]},
            },
        }
    )
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_service.client.app, config=config)


def test_every_operation_is_fuzzed(api_schema: OpenApiSchema) -> None:
    """A new endpoint must join OPERATIONS (and so the fuzz run) before this passes."""
    operations = [result.ok() for result in api_schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == len(list(api_schema.get_all_operations())), "the spec has an invalid operation"
    assert {(op.method.upper(), op.path) for op in operations} == set(OPERATIONS)


@pytest.fixture(scope="module")
def statuses() -> Iterator[Counter[tuple[str, str, str, int]]]:
    """Statuses the fuzz run saw per operation and mode, printed at the end (`pytest -s`) for the ledger."""
    seen: Counter[tuple[str, str, str, int]] = Counter()
    yield seen
    for (method, path, mode, code), n in sorted(seen.items()):
        print(f"fuzz: {method} {path} {mode}: {code} x{n}")


CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode}")
    for method, path in OPERATIONS
    for mode in MODES
    if not (mode == "negative" and (method, path) in NO_INPUT)
    and not (mode == "negative-keyed" and (method, path) not in WITH_BODY)
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_operation_conforms_to_its_schema(
    api_schema: OpenApiSchema, statuses: Counter[tuple[str, str, str, int]], method: str, path: str, mode: str
) -> None:
    """Generated requests of one operation in one mode, each through every default check."""
    operation = api_schema[path][method]
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    strategy = operation.as_strategy(generation, headers=AUTH if mode == "negative-keyed" else None)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        response = case.call_and_validate()
        statuses[(method, path, mode, response.status_code)] += 1

    check()


def test_real_resources_conform_to_the_schema(
    api_schema: OpenApiSchema, fuzz_service: PrivateService, dataset_archive: bytes
) -> None:
    """The success answers that random input rarely reaches, on real resources, through the same
    checks: an upload (201) and its summary, a route job queued (202; no route worker takes it),
    read and cancelled twice (idempotent), embeddings as JSON and as .npy, the weights, their 304
    and their HEAD."""

    def call(
        method: str,
        path: str,
        expected: int,
        params: dict[str, str] | None = None,
        body: Any = NOT_SET,
        media_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        sent = {**AUTH, **(headers or {})}
        case = api_schema[path][method].Case(path_parameters=params, body=body, media_type=media_type, headers=sent)
        response = case.call_and_validate(headers=sent)
        assert response.status_code == expected, (method, path, response.status_code, response.text)
        return response

    dataset_id = call("POST", "/datasets", 201, body={"file": dataset_archive}, media_type=MULTIPART).json()["id"]
    call("GET", "/datasets/{dataset_id}", 200, {"dataset_id": dataset_id})
    route = {"dataset_id": dataset_id, "paths": ["0000"]}
    job = {"job_id": call("POST", "/route", 202, body=route, media_type="application/json").json()["job_id"]}
    assert call("GET", "/route/{job_id}", 200, job).json()["status"] == "queued"
    assert call("DELETE", "/route/{job_id}", 200, job).json()["status"] == "cancelled"
    call("DELETE", "/route/{job_id}", 200, job)

    subnet = {"path": "0312"}
    images = {"files": [png_bytes(make_image(0, seed=3)), png_bytes(make_image(1, seed=4))]}
    embedded = call("POST", "/subnets/{path}/features", 200, subnet, body=images, media_type=MULTIPART)
    assert len(embedded.json()["embeddings"]) == 2
    npy = call(
        "POST", "/subnets/{path}/features", 200, subnet, images, MULTIPART, headers={"Accept": "application/x-npy"}
    )
    assert npy.headers["content-type"][0].startswith("application/x-npy")
    assert list((fuzz_service.settings.data_dir / "tmp").iterdir()) == []  # the requests' staging is gone
    etag = call("GET", "/subnets/{path}/weights", 200, subnet).headers["etag"][0]
    call("GET", "/subnets/{path}/weights", 304, subnet, headers={"If-None-Match": etag})
    call("HEAD", "/subnets/{path}/weights", 200, subnet)
