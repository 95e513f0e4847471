"""A handler for `tollgate listen` in tests: records each event it is given in a file.

TOLLGATE_TEST_RECORD  file to append one JSON line per handled event to
TOLLGATE_TEST_FAIL    while this file exists, the handler fails instead
TOLLGATE_TEST_DELAY   seconds to spend per event (so a test can kill it mid-flow)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from db.listener import OutboxEvent


def record(event: OutboxEvent) -> None:
    if Path(os.environ.get("TOLLGATE_TEST_FAIL", "/nonexistent")).exists():
        raise RuntimeError("told to fail")
    delay = float(os.environ.get("TOLLGATE_TEST_DELAY", "0"))
    if delay:
        time.sleep(delay)
    line = {
        "event_id": str(event.event_id),
        "topic": event.topic,
        "attempt": event.attempt,
        "pid": os.getpid(),
    }
    with Path(os.environ["TOLLGATE_TEST_RECORD"]).open("a") as f:
        f.write(json.dumps(line) + "\n")
