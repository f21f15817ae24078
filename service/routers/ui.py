"""The web page: `/` (upload, route, progress) and `/ui/route/{job_id}` (the report).

Static HTML, CSS and vanilla JavaScript from `service/web/`, no build step. The shells and
assets are public; every piece of data comes from the API's own endpoints, which the page calls
with the key the user enters (kept in `sessionStorage`) when auth is on. See `docs/WEB.md`.
"""

from __future__ import annotations

from pathlib import Path as FsPath

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from service.jobs import JobStore

__all__ = ["WEB_DIR", "router"]

WEB_DIR = FsPath(__file__).resolve().parent.parent / "web"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
# Everything the page needs comes from this origin; no inline script or style anywhere.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The page is small and changes with the code: always revalidate (ETag / Last-Modified).
_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_ASSETS = {p.name: p for p in WEB_DIR.iterdir() if p.suffix in _MEDIA_TYPES and p.suffix != ".html"}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(WEB_DIR / name, media_type=_MEDIA_TYPES[".html"], headers=_HEADERS)


@router.get("/")
def index_page() -> FileResponse:
    """Upload a dataset archive, start a route, watch its progress."""
    return _page("index.html")


@router.get("/ui/route/{job_id}")
def report_page(job_id: str) -> FileResponse:
    """The report of one route job; the script reads the id from the URL (and the job from the API)."""
    if not JobStore.valid_id(job_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{job_id!r} is not a route job id")
    return _page("report.html")


@router.get("/ui/static/{name}")
def static_asset(name: str) -> FileResponse:
    """A stylesheet or script of the page (a fixed allow-list: the files in `service/web/`)."""
    file = _ASSETS.get(name)
    if file is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no such asset: {name!r}")
    return FileResponse(file, media_type=_MEDIA_TYPES[file.suffix], headers=_HEADERS)
