"""One error shape everywhere: RFC 9457 problem details plus the request id."""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.logging import request_id_var

log = logging.getLogger("bagtrack.errors")

PROBLEM_JSON = "application/problem+json"
MAX_ERRORS = 20  # validation errors listed in one 422


class ProblemError(Exception):
    """Raise to answer with a problem document; `slug` names the problem type (`urn:bagtrack:problem:<slug>`)."""

    status: int = 400
    slug: str = "bad-request"
    title: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status or self.status
        self.slug = slug or self.slug
        self.title = title or self.title or HTTPStatus(self.status).phrase
        self.headers = headers or {}
        self.extra = extra


class InvalidInput(ProblemError):
    """422 for input that is well-formed but breaks a rule (a weak password, an unknown area)."""

    status, slug = 422, "validation-error"


class NotFound(ProblemError):
    status, slug = 404, "not-found"


class Conflict(ProblemError):
    status, slug = 409, "conflict"


class Forbidden(ProblemError):
    status, slug = 403, "forbidden"


class Unauthorized(ProblemError):
    status, slug = 401, "unauthorized"

    def __init__(self, detail: str = "missing or invalid access token", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kw)


class ServiceUnavailable(ProblemError):
    status, slug = 503, "service-unavailable"

    def __init__(self, detail: str, *, retry_after: int = 2, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": str(retry_after)})
        super().__init__(detail, **kw)


# Set on a 5xx that a service answers because something *it* depends on failed (billing, auth's keys):
# callers' breakers then do not count it against the service, which itself is healthy.
DEPENDENCY_FAILURE_HEADER = "X-Dependency-Failure"


class DependencyUnavailable(ServiceUnavailable):
    """503: a service this one needs could not answer; names it in DEPENDENCY_FAILURE_HEADER."""

    slug = "dependency-unavailable"

    def __init__(self, detail: str, *, dependency: str, retry_after: int = 2, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": str(retry_after), DEPENDENCY_FAILURE_HEADER: dependency})
        super().__init__(detail, retry_after=retry_after, **kw)


def problem_body(status: int, detail: str, *, slug: str | None = None, title: str | None = None, **extra: Any) -> dict:
    body = {
        "type": f"urn:bagtrack:problem:{slug}" if slug else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "request_id": request_id_var.get(),
    }
    body.update(extra)
    return body


def problem_response(status: int, detail: str, *, headers: dict[str, str] | None = None, **kw: Any) -> JSONResponse:
    return JSONResponse(problem_body(status, detail, **kw), status_code=status, headers=headers, media_type=PROBLEM_JSON)


def problem_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses=` entries saying these statuses answer with a problem document."""
    schema = {"type": "object", "properties": {k: {"type": "string"} for k in ("type", "title", "detail", "request_id")}
              | {"status": {"type": "integer"}}}
    return {status: {"description": HTTPStatus(status).phrase, "content": {PROBLEM_JSON: {"schema": schema}}}
            for status in statuses}


_SLUGS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
          409: "conflict", 413: "payload-too-large", 415: "unsupported-media-type", 429: "rate-limited"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.status, exc.detail, slug=exc.slug, title=exc.title, headers=exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(exc.status_code, detail, slug=_SLUGS.get(exc.status_code), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may be a password.
        # At most MAX_ERRORS entries: a 1 MiB body of unknown keys once drew a 9.9 MB answer, unauthenticated.
        found = exc.errors()
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in found[:MAX_ERRORS]]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
        extra = {"errors_omitted": len(found) - MAX_ERRORS} if len(found) > MAX_ERRORS else {}
        return problem_response(422, f"{where}: {first['msg']}", slug="validation-error", errors=errors, **extra)
