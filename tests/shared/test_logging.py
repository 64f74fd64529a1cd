"""Log lines: JSON with the request id; on the event loop written in batches, never lost, never reordered."""
from __future__ import annotations

import asyncio
import io
import json
import logging

from shared.logging import BatchingStreamHandler, JsonFormatter


def make_logger(stream: io.StringIO) -> logging.Logger:
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger(f"bagtrack.test.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_logged_on_the_loop_are_written_together_soon_after_and_in_order():
    stream = io.StringIO()
    logger = make_logger(stream)

    async def main():
        for i in range(5):
            logger.info("line %d", i)
        assert stream.getvalue() == ""  # not yet: one write for the batch
        await asyncio.sleep(BatchingStreamHandler.every * 2)
        return [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]

    assert asyncio.run(main()) == [f"line {i}" for i in range(5)]


def test_a_warning_is_written_at_once_with_everything_before_it():
    stream = io.StringIO()
    logger = make_logger(stream)

    async def main():
        logger.info("first")
        logger.warning("then this")
        return [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]

    assert asyncio.run(main()) == ["first", "then this"]


def test_off_the_loop_every_line_is_written_at_once():
    stream = io.StringIO()
    make_logger(stream).info("from a tool")
    assert json.loads(stream.getvalue())["msg"] == "from a tool"
