"""Streamed CSV exports: rows become text a thousand at a time, so an export of any size holds one chunk in memory."""
from __future__ import annotations

import csv
import io
from typing import AsyncIterable, AsyncIterator, Iterable, Sequence

CHUNK_ROWS = 1000


async def csv_chunks(header: Sequence[str], rows: AsyncIterable[Iterable]) -> AsyncIterator[str]:
    """The header, then `rows` as CSV text, one chunk per CHUNK_ROWS rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    n = 0
    async for row in rows:
        writer.writerow(row)
        n += 1
        if n % CHUNK_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
