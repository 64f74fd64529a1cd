"""redis-py's asyncio client vs shared/resp.py on the commands the cache sends, in one process.

    .venv/bin/python bench/redis_client.py      (Redis on 127.0.0.1:6379, db 0; keys bagtrack:bench:*)

Prints the CPU per call (median of five rounds of 2,000): a GET (a cached lookup) and a two-SET pipeline
(the invalidation after a child scan), each with redis-py 8.1 configured as the cache used to, and with RespClient.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.resp import RespClient  # noqa: E402

URL = "redis://127.0.0.1:6379/0"


async def main() -> None:
    redis_py = aioredis.Redis.from_url(URL, socket_timeout=0.25, socket_connect_timeout=0.25, retry_on_timeout=False)
    resp = RespClient(URL)
    await redis_py.set("bagtrack:bench:k", b"x" * 400)

    async def redis_py_get():
        await redis_py.get("bagtrack:bench:k")

    async def resp_get():
        await resp.call("GET", "bagtrack:bench:k")

    async def redis_py_pipeline():
        pipe = redis_py.pipeline(transaction=False)
        pipe.set("bagtrack:bench:t1", b"x", px=2000)
        pipe.set("bagtrack:bench:t2", b"x", px=2000)
        await pipe.execute()

    async def resp_pipeline():
        await resp.pipeline([("SET", "bagtrack:bench:t1", b"x", "PX", 2000), ("SET", "bagtrack:bench:t2", b"x", "PX", 2000)])

    cases = {"GET, redis-py": redis_py_get, "GET, RespClient": resp_get,
             "2 x SET pipeline, redis-py": redis_py_pipeline, "2 x SET pipeline, RespClient": resp_pipeline}
    results = {name: [] for name in cases}
    for _ in range(5):
        for name, case in cases.items():
            for _ in range(100):
                await case()
            started = time.process_time()
            for _ in range(2000):
                await case()
            results[name].append((time.process_time() - started) / 2000 * 1e6)
    for name, values in results.items():
        print(f"{name:30s} {statistics.median(values):5.0f} µs CPU (of five rounds: {min(values):.0f}-{max(values):.0f})")
    await redis_py.aclose()
    await resp.aclose()


if __name__ == "__main__":
    uvloop.run(main())
