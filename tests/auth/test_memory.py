"""A real auth process under a login storm with the production argon2 parameters: its RSS, read from /proc,
comes back down once the storm is over and never reaches the container's memory limit."""
import asyncio
from collections import Counter

import pytest

from bench.auth_memory import LOGINS, auth_process, login_storm, memory_mib, settled_rss

SETTLED_MIB = 150  # SPEC §4: a process stays under ~150 MB RSS
CONTAINER_LIMIT_MIB = 200  # deploy/k8s/auth.yaml, deploy/docker-compose.yml


@pytest.fixture(scope="module")
def rss_after_storm(backend, tmp_path_factory):
    """Settled and peak RSS (MiB) of a real auth process after a storm of 60 concurrent logins."""
    env = {}
    if backend.database_url:
        env = {"DATABASE_URL": backend.database_url + "_memory", "REDIS_URL": backend.redis_url}
    with auth_process(tmp_path_factory.mktemp("auth-memory"), env) as proc:
        assert asyncio.run(login_storm(proc.url)) == Counter({200: LOGINS})
        yield settled_rss(proc.pid), memory_mib(proc.pid)["VmHWM"]


def test_resident_memory_settles_under_150_mib_after_60_concurrent_logins(rss_after_storm):
    settled, _ = rss_after_storm
    assert settled < SETTLED_MIB, f"settled VmRSS {settled:.1f} MiB"


def test_resident_memory_peaks_under_the_container_limit_during_the_storm(rss_after_storm):
    _, peak = rss_after_storm
    assert peak < CONTAINER_LIMIT_MIB, f"peak VmHWM {peak:.1f} MiB"
