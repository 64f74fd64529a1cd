"""What the benchmarks share: a loopback port probe and a wrk run that reports percentiles wrk itself computes."""
from __future__ import annotations

import os
import socket
import subprocess
from contextlib import closing
from pathlib import Path

# Appended to every wrk script: one machine-readable line with p50/p95/p99/max (ms) and the error counts.
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %.3f %.3f %.3f %.3f %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def reachable(port: int) -> bool:
    with closing(socket.socket()) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_wrk(url: str, *, connections: int, seconds: int, script: Path, env: dict[str, str]) -> dict | None:
    """A closed-loop wrk run (one thread, bounded in time); None when wrk printed no result line."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "-s", str(script), url],
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=seconds + 30)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT")), None)
    if line is None:
        return None
    reqs, micros, p50, p95, p99, worst, non2xx, errors = line.split()[1:]
    return {"rps": int(reqs) / (int(micros) / 1e6), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "max": float(worst), "non2xx": int(non2xx), "errors": int(errors)}
