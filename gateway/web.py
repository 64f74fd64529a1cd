"""The operators' web app: its page at `/` and its assets under `/app/`, served from gateway/webapp/.

Plain files, no build step: ES modules, one stylesheet, system fonts, no third-party asset (it must work on a LAN
with no internet). They are read once at start-up, gzipped once, and answered from memory with an ETag, so a
revalidation is a 304 of a few bytes. Every answer carries the same strict headers: a Content-Security-Policy that
allows this origin's scripts and calls only (no inline script, no eval, no framing), nosniff, no referrer.

The page talks to the public API only (/api/v1, through the gateway like any client). Its token handling: the
access token in page memory, the refresh token in auth's httpOnly cookie (services/auth/api/auth.py).
"""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response

from gateway.routes import WEB_ASSETS
from shared.errors import NotFound

ROOT = Path(__file__).with_name("webapp")

CSP = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".json": "application/json",
         ".webmanifest": "application/manifest+json"}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str


def load(root: Path = ROOT) -> dict[str, Asset]:
    """Every servable file under `root`, by the path it is served at ("/" for index.html)."""
    assets = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in TYPES:
            continue
        body = path.read_bytes()
        name = "/" if path.name == "index.html" and path.parent == root else WEB_ASSETS + path.relative_to(root).as_posix()
        assets[name] = Asset(body, gzip.compress(body, 9, mtime=0), TYPES[path.suffix],
                             '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return assets


ASSETS = load()
router = APIRouter(include_in_schema=False)


def _answer(request: Request, asset: Asset) -> Response:
    # no-cache: kept, but revalidated on every load (a 304 of a few bytes), so a deploy is seen at the next reload.
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("accept-encoding", ""):
        body, headers["Content-Encoding"] = asset.gzipped, "gzip"
    return Response(body, media_type=asset.content_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
async def page(request: Request) -> Response:
    return _answer(request, ASSETS["/"])


@router.api_route(WEB_ASSETS + "{name:path}", methods=["GET", "HEAD"])
async def asset(request: Request, name: str) -> Response:
    found = ASSETS.get(WEB_ASSETS + name)
    if found is None:
        raise NotFound(f"no such file of the web app: {name[:100]!r}")
    return _answer(request, found)
