"""Operator reconciliation: settlement files in, and Stripe's own view replayed after missed
webhooks. The matching itself lives in SQL (db/sql/87-reconciliation.sql); the state changes
go through the same ingest function as webhooks (api.ingest_stripe_event_v1), and a run tells
what it repaired from what the webhooks had applied already."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

import psycopg

from db import queries

REQUIRED_COLUMNS = ("reference", "amount", "currency", "date")
_LINE = re.compile(r"^line (\d+)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_LINES = 100_000


class FileError(ValueError):
    """A settlement file Tollgate cannot read; the message names the line."""


@dataclass(frozen=True, slots=True)
class Lines:
    lines: list[queries.ReconciliationLineV1]
    file_lines: list[int]  # where each line is in the file (the database numbers them 1, 2, ...)

    def in_file(self, message: str) -> str:
        """A database message about "line N" (Nth data line), with N as the file's line."""
        found = _LINE.match(message)
        if not found or not 0 < int(found[1]) <= len(self.file_lines):
            return message
        return f"line {self.file_lines[int(found[1]) - 1]}" + message[found.end() :]


def read_csv(path: Path) -> Lines:
    """A CSV with a header row: reference, amount (major units, e.g. 12.50), currency, date
    (YYYY-MM-DD) and optionally account_id. Any other column is ignored."""
    lines = Lines([], [])
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise FileError(f"{path}: the header lacks {', '.join(missing)}")
            for row in reader:
                n = reader.line_num
                if any(_CONTROL.search(v) for v in row.values() if isinstance(v, str)):
                    raise FileError(f"{path}, line {n}: control characters (such as NUL)")
                if len(lines.lines) == MAX_LINES:
                    raise FileError(f"{path}: more than {MAX_LINES} lines; split the file")
                text = (row["amount"] or "").strip()
                try:  # ASCII only: Decimal() would read other scripts' digits too
                    amount = Decimal(text) if text.isascii() else Decimal("NaN")
                except InvalidOperation:
                    amount = Decimal("NaN")
                if not amount.is_finite():
                    raise FileError(f"{path}, line {n}: amount {row['amount']!r} is not a number")
                try:
                    day = dt.date.fromisoformat((row["date"] or "").strip())
                except ValueError:
                    raise FileError(
                        f"{path}, line {n}: date {row['date']!r} is not like 2026-11-01"
                    ) from None
                lines.lines.append(
                    queries.ReconciliationLineV1(
                        (row["reference"] or "").strip(),
                        amount,
                        (row["currency"] or "").strip().upper(),
                        day,
                        (row.get("account_id") or "").strip() or None,
                    )
                )
                lines.file_lines.append(n)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FileError(f"{path}: {exc}") from exc
    if not lines.lines:
        raise FileError(f"{path}: no lines after the header")
    return lines


def _synthetic_event(obj: dict[str, Any], observed: int) -> dict[str, Any]:
    """The event Stripe would have sent for this object's current state, stamped with the time
    it was observed (so any webhook from before the listing counts as older). Its id names the
    object and its state: a refund in full, the amount refunded so far, a subscription's status
    and period end."""
    if obj["object"] == "charge":
        event_type = "charge.refunded"
        event_id = f"evt_reconcile_{obj['id']}_refunded"
        if not obj.get("refunded"):
            event_id += f"_{obj.get('amount_refunded')}"
    elif obj["object"] == "subscription":
        event_type = "customer.subscription.updated"
        period_end = obj.get("current_period_end") or "none"
        event_id = f"evt_reconcile_{obj['id']}_{obj.get('status')}_{period_end}"
    else:
        event_id = f"evt_reconcile_{obj['id']}_{obj.get('status')}"
        event_type = "payment_intent.reconciled"
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": observed,
        "livemode": bool(obj.get("livemode")),
        "data": {"object": obj},
        "tollgate_reconciled": True,
    }


def _tollgate_subscription(obj: dict[str, Any]) -> bool:
    """A subscription Tollgate follows: its metadata names the account."""
    return bool((obj.get("metadata") or {}).get("tollgate_account"))


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


# What a run says of each object, in the order the summary lists them.
REPAIRED = "repaired"  # Tollgate's record changed: a webhook had been missed
ALREADY_APPLIED = "already applied"  # Tollgate had Stripe's state already (webhooks did it)
NOT_APPLIED = "not applied"  # Stripe's state is one Tollgate's rules refuse (kept as it was)
IGNORED = "ignored"  # a subscription naming an account Tollgate does not have
UNKNOWN = "not Tollgate's"  # an object Tollgate did not create: left alone
OUTCOMES = (REPAIRED, ALREADY_APPLIED, NOT_APPLIED, IGNORED, UNKNOWN)


def summary(counts: Counter[str]) -> str:
    """One line: ``3 repaired, 2 already applied, 5 not Tollgate's``."""
    return ", ".join(f"{counts[k]} {k}" for k in OUTCOMES if counts[k]) or "nothing to repair"


def repair_from_stripe(
    conn: psycopg.Connection[Any],
    objects: Iterable[dict[str, Any]],
    *,
    observed: int,
    changed: Callable[[str], None] = lambda _: None,
    read: Callable[[Counter[str]], None] = lambda _: None,
) -> Counter[str]:
    """Apply Stripe's current state of every PaymentIntent Tollgate created (every charge of
    one with something refunded, and every subscription naming a Tollgate account) through the
    webhook path, each in a transaction of its own, and count what happened to each (OUTCOMES).

    Tollgate's record of the object (its status, what was refunded, a subscription's period:
    queries.operator_stripe_states) is compared before and after: an object whose record
    changed was ``repaired`` (a webhook was missed) and its synthetic event is kept, so a
    second run finds it a duplicate; one whose record did not change was ``already applied``
    (the webhooks had done it), and its transaction is rolled back: nothing is written. So is
    one Tollgate's rules refuse (``not applied``, with both states named). ``changed`` hears of
    each object repaired or not applied; ``read`` gets the counts after every page."""
    counts: Counter[str] = Counter()
    for chunk in _chunks(objects, 100):
        refs = [o["payment_intent"] if o["object"] == "charge" else o["id"] for o in chunk]
        states = queries.operator_stripe_states(
            conn, stripe_ids=[r for r in refs if isinstance(r, str)]
        )
        for obj, ref in zip(chunk, refs, strict=True):
            if obj["object"] == "subscription":
                if not _tollgate_subscription(obj):
                    counts[UNKNOWN] += 1
                    continue
            elif ref not in states:
                counts[UNKNOWN] += 1
                continue
            outcome, after = _apply(conn, obj, observed, before=states.get(ref))
            counts[outcome] += 1
            if outcome == REPAIRED:
                states[ref] = after or ""
                changed(f"{ref}: {REPAIRED}, now {after}")
            elif outcome == NOT_APPLIED:
                changed(
                    f"{ref}: {NOT_APPLIED}: Stripe says {_stripe_state(obj)}, "
                    f"Tollgate has {states.get(ref)}"
                )
        read(counts)
    return counts


def _apply(
    conn: psycopg.Connection[Any], obj: dict[str, Any], observed: int, *, before: str | None
) -> tuple[str, str | None]:
    """Ingest the synthetic event of ``obj`` in a transaction, kept only if it changed
    Tollgate's record of the object (``before``). Returns the outcome and the record after."""
    ref = obj["payment_intent"] if obj["object"] == "charge" else obj["id"]
    event = json.dumps(_synthetic_event(obj, observed))
    with conn.transaction() as tx:
        ingested = queries.ingest_stripe_event_sync(conn, event=event)
        if ingested.outcome == "duplicate":  # an earlier run repaired this very state
            return ALREADY_APPLIED, before
        after = queries.operator_stripe_states(conn, stripe_ids=[ref]).get(ref)
        if after is not None and after != before:
            return REPAIRED, after
        # Tollgate's record did not change: keep nothing of this object's run.
        outcome = {"rejected": NOT_APPLIED, "ignored": IGNORED}.get(
            ingested.outcome, ALREADY_APPLIED
        )
        raise psycopg.Rollback(tx)
    return outcome, before


def _stripe_state(obj: dict[str, Any]) -> str:
    if obj["object"] == "charge":
        return f"refunded {obj.get('amount_refunded')} (Stripe's units)"
    return str(obj.get("status"))


class Progress:
    """Progress of a long run on a terminal: one line, rewritten in place as pages are read
    (Stripe does not say how many objects there are, so it counts rather than fills a bar).
    Elsewhere (a log, a pipe) it writes a line per thousand objects."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._last = 0

    def changed(self, line: str) -> None:
        self._out.write(("\r\033[K" if self._tty else "") + line + "\n")

    def read(self, counts: Counter[str]) -> None:
        total = sum(counts.values())
        text = f"{total} objects read: {summary(counts)}"
        if self._tty:
            self._out.write("\r\033[K" + text)
        elif total // 1000 > self._last // 1000:
            self._out.write(text + "\n")
        self._last = total
        self._out.flush()

    def done(self) -> None:
        if self._tty and self._last:
            self._out.write("\n")
