"""A handler for `tollgate listen` in tests: records each event it is given in a file.

TOLLGATE_TEST_RECORD  file to append one JSON line per handled event to
TOLLGATE_TEST_FAIL    while this file exists, the handler fails (and notes the attempt)
TOLLGATE_TEST_CRASH   while this file exists, the handler kills its process
TOLLGATE_TEST_HANG    while this file exists, the handler never returns
TOLLGATE_TEST_DELAY   seconds to spend per event (so a test can stop it mid-flow)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from db.listener import OutboxEvent


def _flag(name: str) -> bool:
    return Path(os.environ.get(name, "/nonexistent")).exists()


def _note(event: OutboxEvent, outcome: str) -> None:
    line = {
        "id": str(event.id),
        "type": event.type,
        "attempt": event.attempt,
        "pid": os.getpid(),
        "outcome": outcome,
        "at": time.time(),
    }
    with Path(os.environ["TOLLGATE_TEST_RECORD"]).open("a") as f:
        f.write(json.dumps(line) + "\n")


def record(event: OutboxEvent) -> None:
    if _flag("TOLLGATE_TEST_CRASH"):
        os._exit(3)
    if _flag("TOLLGATE_TEST_HANG"):
        time.sleep(3600)
    if _flag("TOLLGATE_TEST_FAIL"):
        _note(event, "failed")
        raise RuntimeError("told to fail")
    delay = float(os.environ.get("TOLLGATE_TEST_DELAY", "0"))
    if delay:
        time.sleep(delay)
    _note(event, "handled")
