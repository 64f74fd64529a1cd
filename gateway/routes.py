"""The route table: the public API's routes (an explicit allow-list), which upstream owns each, and which need no token.

Only the routes listed in PUBLIC_API pass the gateway. Everything else under /api/v1 is a 404 from the gateway, as
for an unknown area: in particular the service-to-service routes (each service's /internal/..., e.g. scanning's
bill marks, which only billing calls) and any route a service grows before it is added here. The merged
/openapi.json (gateway.openapi) shows exactly these routes.
"""
from __future__ import annotations

from dataclasses import dataclass

API_PREFIX = "/api/v1"
# Beside the API, the public port serves /health, /docs, /openapi.json and the operators' web app: its page at "/"
# and its static files under WEB_ASSETS (gateway/web.py). The edges (deploy/nginx, the Ingress) pass exactly these.
WEB_ASSETS = "/app/"

# area (first path segment after /api/v1) -> upstream name
AREAS = {
    "auth": "auth",
    "users": "auth",
    "scans": "scanning",
    "bags": "scanning",
    "bills": "billing",
    "dashboard": "dashboard",
}

# The public API: (method, service-side path template, needs an access token). Templates are the services' own
# (FastAPI) paths, "{name}" matching one non-empty path segment; a literal route wins over a templated one.
#
# Add a route here when it is built for clients, never a service-to-service one (those live under /internal/ and
# are never listed).
#
# The event stream needs no token *at the gateway*: a browser's EventSource cannot send one, so the dashboard
# itself checks the single-use ticket (or a bearer token) it is opened with. Its ticket route needs a token.
PUBLIC_API: tuple[tuple[str, str, bool], ...] = (
    # auth
    ("POST", "/auth/login", False),
    ("POST", "/auth/refresh", False),
    ("GET", "/auth/jwks", False),
    ("POST", "/auth/logout", True),
    ("GET", "/auth/me", True),
    ("GET", "/auth/reference", True),
    # users (auth)
    ("GET", "/users", True),
    ("POST", "/users", True),
    ("POST", "/users/me/password", True),
    ("GET", "/users/{user_id}", True),
    ("PATCH", "/users/{user_id}", True),
    ("DELETE", "/users/{user_id}", True),
    # scans (scanning)
    ("POST", "/scans/parent", True),
    ("POST", "/scans/child", True),
    ("GET", "/scans", True),
    ("GET", "/scans/reference", True),
    # bags (scanning)
    ("GET", "/bags", True),
    ("GET", "/bags/export.csv", True),
    ("GET", "/bags/{qr_id}", True),
    ("DELETE", "/bags/{qr_id}", True),
    ("DELETE", "/bags/{parent_qr}/children/{child_qr}", True),
    # bills (billing)
    ("GET", "/bills", True),
    ("POST", "/bills", True),
    ("GET", "/bills/summary", True),
    ("GET", "/bills/export.csv", True),
    ("GET", "/bills/{bill_id}", True),
    ("PATCH", "/bills/{bill_id}", True),
    ("DELETE", "/bills/{bill_id}", True),
    ("POST", "/bills/{bill_id}/bags", True),
    ("DELETE", "/bills/{bill_id}/bags/{parent_qr}", True),
    ("POST", "/bills/{bill_id}/complete", True),
    ("POST", "/bills/{bill_id}/reopen", True),
    ("GET", "/bills/{bill_id}/history", True),
    # dashboard
    ("GET", "/dashboard/stats", True),
    ("GET", "/dashboard/activity", True),
    ("GET", "/dashboard/trends", True),
    ("GET", "/dashboard/lookup/{code}", True),
    ("POST", "/dashboard/stream/ticket", True),
    ("GET", "/dashboard/stream", False),
)

# Long-lived answers (Server-Sent Events): forwarded with the stream read timeout (GATEWAY_STREAM_READ_TIMEOUT,
# above the stream's heartbeat) instead of the upstream timeout, which bounds the wait for each chunk.
STREAMS = frozenset({("GET", "/dashboard/stream")})

# Writes whose body may carry their own idempotency key (SPEC: every scan write accepts a client `scan_id`): one
# that does is as safe to send again as one with an Idempotency-Key header, so the gateway retries it when the
# connection fails (shared/http.py), and it keeps its pooled connection.
BODY_KEYS = {("POST", "/scans/parent"): "scan_id", ("POST", "/scans/child"): "scan_id"}

# (method, service-side path) reachable without an access token.
PUBLIC_ROUTES = frozenset((method, path) for method, path, token in PUBLIC_API if not token)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes, the template its metrics are labelled with, and whether it needs a token."""

    upstream: str
    template: str
    public: bool = False
    stream: bool = False
    body_key: str | None = None  # BODY_KEYS


def _route(method: str, template: str, token: bool) -> Route:
    area = template.split("/")[1]
    return Route(AREAS[area], API_PREFIX + template, public=not token, stream=(method, template) in STREAMS,
                 body_key=BODY_KEYS.get((method, template)))


# Built once: resolving a request allocates little (one split for a templated path).
_BY_TEMPLATE = {(method, template): _route(method, template, token) for method, template, token in PUBLIC_API}
_LITERAL = {key: route for key, route in _BY_TEMPLATE.items() if "{" not in key[1]}
# (method, area, segment count) -> [(segments, route)], a None segment being a parameter.
_TEMPLATED: dict[tuple[str, str, int], list[tuple[tuple[str | None, ...], Route]]] = {}
for (_method, _template), _r in _BY_TEMPLATE.items():
    if "{" in _template:
        _segments = tuple(None if s.startswith("{") else s for s in _template[1:].split("/"))
        _TEMPLATED.setdefault((_method, _segments[0], len(_segments)), []).append((_segments, _r))


def resolve(method: str, path: str) -> Route | None:
    """The route for a service-side path (the request path without /api/v1), or None when the public API has none."""
    route = _LITERAL.get((method, path))
    if route is not None:
        return route
    if not path.startswith("/"):
        return None
    segments = path[1:].split("/")
    candidates = _TEMPLATED.get((method, segments[0], len(segments)))
    if not candidates:
        return None
    # "/bags/../users" must not be re-routed by URL normalisation after the route was chosen.
    if any(s in ("", ".", "..") for s in segments):
        return None
    for pattern, route in candidates:
        if all(p is None or p == s for p, s in zip(pattern, segments)):
            return route
    return None


def template_route(method: str, template: str) -> Route | None:
    """The route a service's own OpenAPI path template names, if it is part of the public API."""
    return _BY_TEMPLATE.get((method, template))
