"""The dashboard's own metrics: how its parts' refreshes go, and how old what it serves is, per source."""
from __future__ import annotations

from prometheus_client import Counter, Gauge

# kind: the key's prefix (scan-stats, bill-trends, bag, ...); outcome: ok, failed (the source could not answer),
# absent (a lookup the source answered 4xx), skipped (already refreshed by the time the lock was taken),
# elsewhere (another replica holds the key's refresh lock).
PART_REFRESHES = Counter("bagtrack_dashboard_part_refreshes_total", "Refreshes of dashboard parts from their sources",
                         ["kind", "outcome"])
PART_AGE = Gauge("bagtrack_dashboard_part_age_seconds",
                 "Age (now - as_of) of the part of this kind last served, by source", ["source", "kind"])
