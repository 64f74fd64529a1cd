"""The route table: which upstream owns each /api/v1 area, and the few routes that need no token."""
from __future__ import annotations

from dataclasses import dataclass

API_PREFIX = "/api/v1"

# area (first path segment after /api/v1) -> upstream name
AREAS = {
    "auth": "auth",
    "users": "auth",
    "scans": "scanning",
    "bags": "scanning",
    "bills": "billing",
    "dashboard": "dashboard",
}

# (method, service-side path) reachable without an access token.
PUBLIC_ROUTES = frozenset({("POST", "/auth/login"), ("POST", "/auth/refresh"), ("GET", "/auth/jwks")})


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes, the template its metrics are labelled with, and whether it needs a token."""

    upstream: str
    template: str
    public: bool = False


# Built once: resolving a request allocates nothing.
_AREA_ROUTES = {
    area: (Route(upstream, f"{API_PREFIX}/{area}"), Route(upstream, f"{API_PREFIX}/{area}/{{path}}"))
    for area, upstream in AREAS.items()
}
_PUBLIC = {(method, path): Route(AREAS[path.split("/")[1]], API_PREFIX + path, public=True)
           for method, path in PUBLIC_ROUTES}


def resolve(method: str, path: str) -> Route | None:
    """The route for a service-side path (the request path without /api/v1), or None when no area serves it."""
    route = _PUBLIC.get((method, path))
    if route is not None:
        return route
    end = path.find("/", 1)
    routes = _AREA_ROUTES.get(path[1:] if end < 0 else path[1:end])
    if routes is None or ("/." in path and _has_dot_segment(path)):
        return None
    return routes[0] if end < 0 or end == len(path) - 1 else routes[1]


def _has_dot_segment(path: str) -> bool:
    # "/bags/../users" must not be re-routed by URL normalisation after the area was chosen.
    return any(segment in (".", "..") for segment in path.split("/"))
