"""The web page in real headless Chromium against the real service, with auth on.

Debian's `/usr/bin/chromium` (`apt-get install chromium`), driven by Playwright for Python (never
`playwright install`: no browser download). The API runs in uvicorn on a free loopback port, with
`SDR_API_KEYS` set, in front of the session's real Redis and `celery worker` subprocess
(`conftest.py`). The accessibility check is axe-core 4.14.1 (MPL-2.0, vendored from npm in
`vendor/axe.min.js`): no WCAG 2.1 A/AA violation on either page, at desktop width and at 375 px.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import sync_playwright

from service.settings import Settings
from tests.service.support import REPO, WorkerProc

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE_SOURCE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()
DEMO_ARCHIVE = REPO / "examples" / "fmnist_tops_demo.zip"
API_KEY = "web-page-test-key"
ROUTE_TIMEOUT_S = 750  # about 70 s on 2 idle cores, 560 s under a load of 10; pytest-timeout is 900
NARROW = {"width": 375, "height": 800}
DESKTOP = {"width": 1280, "height": 900}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live_url(settings: Settings, worker: WorkerProc) -> Iterator[str]:
    """The API, with an API key required, served by uvicorn on a free loopback port."""
    from service.app import create_app

    app = create_app(settings.model_copy(update={"api_keys": [API_KEY]}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)
    sock.close()


@pytest.fixture(scope="module")
def api(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's build)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _new_page(browser: Any, viewport: dict[str, int], *, with_key: bool) -> tuple[Any, list[str]]:
    """A tab and the script errors and CSP violations it will collect; `with_key` pre-loads the key."""
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    if with_key:
        context.add_init_script(f"sessionStorage.setItem('sdr-api-key', {API_KEY!r})")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    return page, errors


def _axe_violations(page: Any) -> list[str]:
    page.evaluate(AXE_SOURCE)  # through the DevTools protocol: the page's CSP stays on
    violations = page.evaluate(
        """async () => (await axe.run(document, {runOnly: {type: "tag",
             values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}})).violations
           .map(v => `${v.id}: ${v.help} at ${v.nodes.map(n => n.target.join(" ")).join(", ")}`)"""
    )
    return list(violations)


def _percent(text: str | None) -> float:
    """`"82.7%"` -> 82.7 (the page rounds half up, Python's format half to even: compare with a tolerance)."""
    assert text is not None and text.endswith("%"), text
    return float(text[:-1])


def _page_width(page: Any) -> int:
    return int(page.evaluate("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"))


@pytest.fixture(scope="module")
def routed_job(browser: Any, live_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Drive `/` as a user: enter the key when asked, upload the demo archive, route, reach the report."""
    page, errors = _new_page(browser, DESKTOP, with_key=False)
    page.goto(live_url + "/")
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")  # GET /subnets answered 401
    violations_with_dialog = _axe_violations(page)
    page.fill("#key-input", "not-the-key")
    page.click("#key-dialog button[value=ok]")
    page.locator("#key-reason", has_text="That key was refused").wait_for()  # asked again, not stored
    assert dialog.is_visible()
    page.fill("#key-input", API_KEY)
    page.click("#key-dialog button[value=ok]")
    page.locator("#checkpoint").wait_for(state="visible")

    page.set_input_files("#file", str(DEMO_ARCHIVE))
    page.select_option("#scorer", "knn")
    page.click("#submit")
    page.locator("#report-link").wait_for(state="visible", timeout=60_000)
    violations_while_routing = _axe_violations(page)
    deadline = time.monotonic() + ROUTE_TIMEOUT_S
    progress: list[str] = []
    while "/ui/route/" not in page.url:  # the page moves on to the report when the route succeeds
        if page.locator("#error").is_visible():
            pytest.fail(f"the page reports: {page.text_content('#error')}")
        assert time.monotonic() < deadline, f"no report after {ROUTE_TIMEOUT_S} s: {progress[-1:]}"
        progress.append(page.locator("#progress-card").inner_text())
        page.wait_for_timeout(500)
    page.locator("body[data-best-path]").wait_for(state="attached", timeout=60_000)
    shots = tmp_path_factory.mktemp("web-page")
    page.screenshot(path=str(shots / "report-desktop.png"), full_page=True)
    return {
        "page": page,
        "errors": errors,
        "job_id": page.url.rsplit("/", 1)[-1],
        "screenshot": shots / "report-desktop.png",
        "axe_index": violations_with_dialog + violations_while_routing,
        "stored_key": page.evaluate("sessionStorage.getItem('sdr-api-key')"),
        "progress": progress,
    }


def test_report_shows_the_api_best_path(routed_job: dict[str, Any], api: httpx.Client) -> None:
    page = routed_job["page"]
    body = api.get(f"/route/{routed_job['job_id']}").json()
    assert body["status"] == "succeeded"
    result = body["result"]
    assert page.text_content("#best-path") == result["best"]["path"]
    assert page.get_attribute("body", "data-best-path") == result["best"]["path"]
    assert _percent(page.text_content("#best-accuracy")) == pytest.approx(100 * result["best"]["accuracy"], abs=0.051)
    assert _percent(page.text_content("#w0-accuracy")) == pytest.approx(100 * result["supernet"]["accuracy"], abs=0.051)
    # One table row and one histogram count per scored path; the best row is marked.
    assert page.locator("#ranking tbody tr").count() == len(result["paths"])
    assert page.text_content("#ranking tbody tr.is-best th") == result["best"]["path"]
    tied = [p["path"] for p in result["paths"] if p["tied_with_best"] and p["path"] != result["best"]["path"]]
    assert page.eval_on_selector_all("#ranking tbody tr.is-tied th", "cells => cells.map(c => c.textContent)") == tied
    assert "95% CI" in (page.text_content("#best-ci") or "") and "95% CI" in (page.text_content("#w0-ci") or "")
    assert page.locator("#skipped li").count() == len(result["skipped"])
    shown_timings = page.text_content("#timings") or ""
    assert all(name.removesuffix("_seconds").replace("_", " ") in shown_timings for name in result["timings"])
    assert page.locator("#histogram rect").count() >= 1
    desc = page.text_content("#histogram desc") or ""
    counts = [int(c) for c in desc.split("Bin counts from lowest gain: ")[1].rstrip(".").split(", ")]
    assert sum(counts) == len(result["paths"])
    assert routed_job["errors"] == []
    assert routed_job["stored_key"] == API_KEY  # entered once, kept for the session
    # Progress was shown live while the route ran, with the job id and the uploaded dataset.
    assert any(re.search(r"\d+ of 256 paths", text) for text in routed_job["progress"]), routed_job["progress"]
    assert any(routed_job["job_id"] in text for text in routed_job["progress"])
    assert any("4 classes, 160 train, 80 test images" in text for text in routed_job["progress"])
    assert routed_job["screenshot"].stat().st_size > 10_000


def test_pages_pass_axe(routed_job: dict[str, Any], browser: Any, live_url: str) -> None:
    assert routed_job["axe_index"] == []
    assert _axe_violations(routed_job["page"]) == []
    for viewport in (DESKTOP, NARROW):
        page, errors = _new_page(browser, viewport, with_key=True)
        page.goto(live_url + "/")
        page.locator("#checkpoint").wait_for(state="visible")
        assert _axe_violations(page) == [], f"/ at {viewport['width']} px"
        page.goto(f"{live_url}/ui/route/{routed_job['job_id']}")
        page.locator("body[data-best-path]").wait_for(state="attached")
        assert _axe_violations(page) == [], f"report at {viewport['width']} px"
        assert errors == []
        page.context.close()


def test_pages_fit_375px(routed_job: dict[str, Any], browser: Any, live_url: str) -> None:
    page, errors = _new_page(browser, NARROW, with_key=True)
    page.goto(live_url + "/")
    page.locator("#checkpoint").wait_for(state="visible")
    assert _page_width(page) <= NARROW["width"]
    page.goto(f"{live_url}/ui/route/{routed_job['job_id']}")
    page.locator("body[data-best-path]").wait_for(state="attached")
    page.locator("#snippet-box summary").click()  # the longest lines of the page
    assert _page_width(page) <= NARROW["width"]
    # The ranking's extra columns scroll inside their own box, which stays within the screen.
    box = page.locator(".table-wrap").bounding_box()
    assert box is not None and box["x"] + box["width"] <= NARROW["width"]
    shot = routed_job["screenshot"].with_name("report-375.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert errors == []
    page.context.close()


def _column(page: Any, index: int) -> list[str]:
    return list(
        page.eval_on_selector_all(f"#ranking tbody tr > :nth-child({index})", "cells => cells.map(c => c.textContent)")
    )


def test_table_sorts_by_clicking_headers(routed_job: dict[str, Any], api: httpx.Client) -> None:
    page = routed_job["page"]
    result = api.get(f"/route/{routed_job['job_id']}").json()["result"]
    page.click("#ranking thead th[data-key=path] button")
    assert page.get_attribute("#ranking thead th[data-key=path]", "aria-sort") == "ascending"
    assert _column(page, 2) == sorted(p["path"] for p in result["paths"])
    page.click("#ranking thead th[data-key=path] button")
    assert page.get_attribute("#ranking thead th[data-key=path]", "aria-sort") == "descending"
    assert _column(page, 2) == sorted((p["path"] for p in result["paths"]), reverse=True)
    page.click("#ranking thead th[data-key=accuracy] button")
    shown = [_percent(a) for a in _column(page, 4)]
    assert shown == sorted(shown, reverse=True)
    assert shown[0] == pytest.approx(100 * max(p["accuracy"] for p in result["paths"]), abs=0.051)
    page.click("#ranking thead th[data-key=rank] button")
    assert _column(page, 1)[0] == "1"


def test_download_and_snippet(routed_job: dict[str, Any], api: httpx.Client) -> None:
    page = routed_job["page"]
    best = page.text_content("#best-path")
    with page.expect_download(timeout=120_000) as download_info:
        page.click("#download")
    download = download_info.value
    saved = Path(download.path()).read_bytes()
    assert saved == api.get(f"/subnets/{best}/weights").content  # fetched with the key, saved as a file
    assert download.suggested_filename.endswith(f"-{best}.safetensors")

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#copy-snippet")
    page.locator("#action-status", has_text="copied").wait_for()
    snippet = page.evaluate("navigator.clipboard.readText()")
    assert f'file = "{download.suggested_filename}"' in snippet
    assert "model.load_state_dict(load_file(file), strict=True)" in snippet
    assert routed_job["errors"] == []


def test_shell_is_public_and_data_is_not(live_url: str, routed_job: dict[str, Any]) -> None:
    with httpx.Client(base_url=live_url) as anonymous:
        for url in ("/", f"/ui/route/{routed_job['job_id']}", "/ui/static/api.js", "/ui/static/style.css"):
            r = anonymous.get(url)
            assert r.status_code == 200, url
            assert "script-src 'self'" in r.headers["content-security-policy"]
        assert anonymous.get("/ui/static/js.js").status_code == 404
        assert anonymous.get("/ui/route/not-a-job-id").status_code == 404
        assert anonymous.get(f"/route/{routed_job['job_id']}").status_code == 401
