"""Latency and status per route, the CPU each process spent, and the one-line verdict.

Success is a 2xx or one of the domain's deliberate answers (403/404 for another area's bag, 409 for a full
parent or a child on another parent, 422 for a code the rules refuse). Everything else fails the run: no answer,
a timeout, any 5xx, 401, 429.
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

DELIBERATE = frozenset({"403", "404", "409", "422"})


def is_success(outcome: str) -> bool:
    return outcome.startswith("2") and len(outcome) == 3 or outcome in DELIBERATE


class Stats:
    """Every measured request's latency (kept exactly: a run is tens of thousands of samples), by route."""

    def __init__(self) -> None:
        self.measuring = False
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.outcomes: dict[str, Counter] = defaultdict(Counter)
        self.started = self.ended = 0.0

    def begin(self) -> None:
        self.measuring, self.started = True, time.monotonic()

    def end(self) -> None:
        if self.measuring:
            self.measuring, self.ended = False, time.monotonic()

    def record(self, label: str, outcome: str, seconds: float) -> None:
        if self.measuring:
            self.latency[label].append(seconds)
            self.outcomes[label][outcome] += 1

    @property
    def window(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def all_latencies(self) -> list[float]:
        return sorted(x for samples in self.latency.values() for x in samples)

    def counts(self) -> tuple[int, int]:
        """(requests, failures) over the whole window."""
        total = sum(sum(c.values()) for c in self.outcomes.values())
        failed = sum(n for c in self.outcomes.values() for o, n in c.items() if not is_success(o))
        return total, failed


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank: the smallest sample that at least q% of the samples do not exceed."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


# --- the CPU each process of the system spent during the window ------------------------------------------

def listening_pids(ports: dict[str, int]) -> dict[str, int]:
    """The pid listening on each named loopback port (read from /proc: no tool needed); missing ones left out."""
    inodes: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] != "0A":  # LISTEN
                continue
            port = int(parts[1].rsplit(":", 1)[1], 16)
            for name, wanted in ports.items():
                if port == wanted:
                    inodes[parts[9]] = name
    found: dict[str, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    found.setdefault(inodes[target[8:-1]], int(pid))
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(*names: str) -> list[int]:
    """Processes whose command name is one of `names` (PostgreSQL's backends, Redis)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() in names:
                found.append(int(pid))
        except OSError:
            continue
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / hz, sum(values) / hz


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class CpuMeter:
    """CPU seconds per process between start() and stop(), plus this generator's own."""

    pids: dict[str, int]
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)

    def _sample(self) -> dict[str, float]:
        sample = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        sample = {name: value for name, value in sample.items() if value is not None}
        sample["loadgen"] = sum(os.times()[:2])
        # PostgreSQL's backends come and go; those alive at both samples are counted.
        sample.update({f"postgres:{pid}": cpu_seconds(pid) or 0.0 for pid in pids_named("postgres")})
        sample.update({f"redis:{pid}": cpu_seconds(pid) or 0.0 for pid in pids_named("redis-server")})
        sample["machine"], sample["machine_total"] = machine_busy()
        return sample

    def start(self) -> None:
        self.before = self._sample()

    def stop(self) -> None:
        self.after = self._sample()

    def used(self) -> dict[str, float]:
        """CPU seconds per process over the window; PostgreSQL's and Redis's summed."""
        used: dict[str, float] = {}
        for name in self.after:
            if name in self.before and name != "machine_total":
                used[name.split(":")[0]] = used.get(name.split(":")[0], 0.0) + self.after[name] - self.before[name]
        return used




# --- output ------------------------------------------------------------------------------------------------

def render(stats: Stats, cpu: CpuMeter, *, users: int) -> str:
    lines = []
    window = stats.window
    header = f"{'route':<26} {'requests':>8} {'rps':>7} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>8}  statuses"
    lines.append(header)
    lines.append("-" * len(header))
    for label in sorted(stats.latency):
        samples = sorted(stats.latency[label])
        statuses = " ".join(f"{o}:{n}" for o, n in sorted(stats.outcomes[label].items()))
        lines.append(f"{label:<26} {len(samples):>8} {len(samples) / window:>7.1f} {ms(percentile(samples, 50)):>7} "
                     f"{ms(percentile(samples, 95)):>7} {ms(percentile(samples, 99)):>7} {ms(samples[-1]):>8}  {statuses}")
    lines.append("(latencies in ms, measured from when each request was sent)")

    used = cpu.used()
    scans = len(stats.latency.get("POST /scans/child", []))
    scanning_requests = sum(len(v) for k, v in stats.latency.items() if k.split(" ", 1)[1].startswith(("/scans", "/bags")))
    machine = used.pop("machine", None)
    cpu_line = ", ".join(f"{name} {seconds / window * 100:.0f}%" for name, seconds in sorted(used.items()))
    lines.append(f"cpu over {window:.0f} s (100% = one core): {cpu_line}")
    if machine is not None:
        lines.append(f"machine busy: {machine / window * 100:.0f}% of {os.cpu_count()} cores' 100% each "
                     f"({machine / window / (os.cpu_count() or 1) * 100:.0f}% of the machine)")
    if "scanning" in used and scanning_requests:
        per_request = used["scanning"] / scanning_requests * 1000
        per_scan = used["scanning"] / scans * 1000 if scans else float("nan")
        lines.append(f"scanning cpu: {per_request:.2f} ms per scanning request; {per_scan:.2f} ms per child scan "
                     f"if all of it is charged to the {scans} child scans")
    memory: dict[str, float] = {}
    for name, pid in cpu.pids.items():  # a fleet's replicas ("scanning:<pid>") summed per tier
        if (rss := rss_mb(pid)) is not None:
            memory[name.split(":")[0]] = memory.get(name.split(":")[0], 0.0) + rss
    lines.append("rss MB: " + ", ".join(f"{n} {m:.0f}" for n, m in sorted(memory.items())))

    total, failed = stats.counts()
    everything = stats.all_latencies()
    success = 100.0 * (total - failed) / total if total else 0.0
    lines.append(f"users={users} rps={total / window:.1f} success={success:.2f}% p95={ms(percentile(everything, 95))}ms "
                 f"p99={ms(percentile(everything, 99))}ms failures={failed}")
    return "\n".join(lines)
