"""One name for one thing, kept by tests: a row of the database and an HTTP model never share a
class name, a handler's event has the names of the JSON it sends on, every named query has one
typed wrapper whose keywords are the query's parameters, and nothing outside db/queries.py runs
a named query by itself."""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import inspect
import re
from pathlib import Path
from typing import Any, get_type_hints
from uuid import uuid4

from db import queries
from db.listener import OutboxEvent

ROOT = Path(__file__).resolve().parent.parent
PARAMETER = re.compile(r"%\((\w+)\)[sb]")


def class_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def test_no_class_name_is_both_a_database_row_and_an_http_model() -> None:
    rows = class_names(ROOT / "db" / "queries.py")
    assert {"PaymentRow", "UsageResultRow"} <= rows, "the parse finds the row classes"
    for models in (ROOT / "api" / "models.py", ROOT / "client" / "tollgate" / "models.py"):
        http = class_names(models)
        assert {"Payment", "UsageResult"} <= http, f"the parse finds the models of {models}"
        assert rows & http == set(), f"in db/queries.py and {models.relative_to(ROOT)}"


def test_every_row_of_a_query_is_named_a_row() -> None:
    found = [
        value
        for value in vars(queries).values()
        if dataclasses.is_dataclass(value) and value.__module__ == queries.__name__
    ]
    assert len(found) > 20, "the module's dataclasses are found"
    assert [c.__name__ for c in found if not c.__name__.endswith("Row")] == []


def wrapper_for(name: str) -> Any:
    found = getattr(queries, name, None) or getattr(queries, f"{name}_sync", None)
    assert callable(found), f"the named query {name} has no wrapper in db/queries.py"
    return found


def test_every_named_query_has_a_wrapper_taking_its_parameters_as_typed_keywords() -> None:
    assert len(queries.QUERIES) > 40, "queries.sql is read"
    for name, query in queries.QUERIES.items():
        wrapper = wrapper_for(name)
        conn, *rest = inspect.signature(wrapper).parameters.values()
        assert conn.name == "conn", name
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in rest), (
            f"{name}: only keyword parameters after the connection (no **params)"
        )
        sent = set(PARAMETER.findall(query.as_string()))
        assert {p.name for p in rest} == sent, f"{name}: the keywords are the query's parameters"
        hints = get_type_hints(wrapper)
        assert all(p.name in hints and hints[p.name] is not Any for p in rest), (
            f"{name}: every keyword has a type"
        )


def test_only_db_queries_runs_named_queries() -> None:
    users = [
        path.relative_to(ROOT)
        for folder in ("api", "db", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "queries.py" and "QUERIES" in path.read_text(encoding="utf-8")
    ]
    assert users == [], "these run named queries without their wrapper"


def test_a_handlers_event_has_the_names_of_its_json() -> None:
    event = OutboxEvent(
        outbox_id=1,
        id=uuid4(),
        type="payment.settled",
        account_id="acct",
        data={"payment_id": "p"},
        created=dt.datetime.now(dt.UTC),
        attempt=1,
    )
    sent = event.to_json()
    fields = {f.name for f in dataclasses.fields(OutboxEvent)}
    assert fields - {"outbox_id"} == set(sent), "outbox_id names the row; the JSON leaves it out"
    assert (sent["id"], sent["type"], sent["data"]) == (str(event.id), event.type, event.data)
    assert sent["created"] == event.created.isoformat()
