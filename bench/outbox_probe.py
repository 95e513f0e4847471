"""The handler bench/outbox.py runs `tollgate listen` with: notes when each event arrived."""

from __future__ import annotations

import os
import time

from db.listener import OutboxEvent

# Line-buffered and never closed: the listener is killed at the end of the run.
_out = open(os.environ.get("TOLLGATE_BENCH_PROBE", os.devnull), "a", buffering=1)


def record(event: OutboxEvent) -> None:
    _out.write(f"{event.id} {time.time():.6f}\n")
