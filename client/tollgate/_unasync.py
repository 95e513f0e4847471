"""Generate the synchronous client from the asynchronous one.

``python client/tollgate/_unasync.py`` rewrites ``_sync_client.py``; a test fails when it is
stale. The rewrite is textual (await, async def, the httpx and asyncio names), then ruff formats
it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "_async_client.py"
TARGET = HERE / "_sync_client.py"

# Applied in order; each must match at least once, so a change to the source that a rule no
# longer fits is noticed rather than silently left asynchronous.
RULES: list[tuple[str, str]] = [
    (
        '"""Tollgate\'s asynchronous client',
        '"""Tollgate\'s synchronous client',
    ),
    (
        "This file is the source: ``tollgate/_sync_client.py`` is generated from it by\n"
        "``python client/tollgate/_unasync.py`` (a test fails when the two drift apart).",
        "Generated from ``tollgate/_async_client.py`` by ``python client/tollgate/_unasync.py``:\n"
        "edit that file, not this one.",
    ),
    ("import asyncio\nimport os\n", "import os\nimport time\n"),
    ("AsyncIterator, Iterable, Mapping", "Iterable, Iterator, Mapping"),
    ("AsyncIterator[", "Iterator["),
    ("httpx.AsyncBaseTransport", "httpx.BaseTransport"),
    ("AsyncClient", "Client"),
    ("async def __aenter__", "def __enter__"),
    ("async def __aexit__", "def __exit__"),
    ("aclose", "close"),
    ("await asyncio.sleep(", "time.sleep("),
    ("async def ", "def "),
    ("await ", ""),
    # async generators cannot ``yield from``; generators should
    (
        "for transaction in page.transactions:\n                yield transaction",
        "yield from page.transactions",
    ),
]


def generate() -> str:
    text = SOURCE.read_text()
    for old, new in RULES:
        if old not in text:
            raise SystemExit(f"_unasync: {old!r} no longer occurs in {SOURCE.name}")
        text = text.replace(old, new)
    for leftover in ("async ", "await ", "asyncio"):
        if leftover in text:
            raise SystemExit(f"_unasync: {leftover!r} left in the generated client")
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    return formatted.stdout


def main() -> None:
    TARGET.write_text(generate())
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
