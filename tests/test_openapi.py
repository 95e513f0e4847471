"""The API's description, /openapi.json, read as a newcomer (or Swagger UI) reads it: every
operation has a summary of its own, a description and an example; the bearer key is declared
where it is needed; the examples are answers and requests Tollgate would accept; /docs loads
nothing from elsewhere. The browser's view of it is tests/test_docs_page.py's part."""

from __future__ import annotations

import inspect
import json
import re
from importlib.metadata import version
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.testclient import TestClient

from api import models
from api.deps import IDEMPOTENT_ROUTES
from api.main import create_app
from tests.test_doc_maps import answered_codes

METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return create_app().openapi()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    if node.get("type") == "array" and "items" in node:
        return resolve(schema, node["items"])
    return node


def examples_of(schema: dict[str, Any], operation: dict[str, Any]) -> list[Any]:
    """The examples of an operation's request body and successful answers."""
    found: list[Any] = []
    media = [*operation.get("requestBody", {}).get("content", {}).values()]
    media += [
        m
        for status, response in operation["responses"].items()
        if status.startswith("2")
        for m in response.get("content", {}).values()
    ]
    for entry in media:
        if "example" in entry:
            found.append(entry["example"])
        found += [e["value"] for e in entry.get("examples", {}).values()]
        found += resolve(schema, entry.get("schema", {})).get("examples", [])
    return found


def test_every_operation_has_a_summary_description_and_example(schema: dict[str, Any]) -> None:
    found = operations(schema)
    assert len(found) >= 25, "every route is in the schema"
    generated = {
        route.name.replace("_", " ").title()
        for route in create_app().routes
        if isinstance(route, APIRoute)
    }
    problems = []
    for method, path, operation in found:
        label = f"{method} {path}"
        summary = operation.get("summary", "")
        if not summary or summary in generated:
            problems.append(f"{label}: no summary of its own ({summary!r})")
        if len(operation.get("description", "")) < 40:
            problems.append(f"{label}: no description")
        if not examples_of(schema, operation):
            problems.append(f"{label}: no example")
    assert problems == []
    summaries = [operation["summary"] for _, _, operation in found]
    assert len(set(summaries)) == len(summaries), "each summary names one operation"


def test_the_bearer_key_is_declared_wherever_a_key_is_needed(schema: dict[str, Any]) -> None:
    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    without_key = {("POST", "/v1/webhooks/stripe"), ("GET", "/healthz"), ("GET", "/readyz")}
    for method, path, operation in operations(schema):
        wanted = [] if (method, path) in without_key else [{"bearer": []}]
        assert operation.get("security", []) == wanted, f"{method} {path}"
        # The key is the scheme's, not a header parameter Swagger UI would ask for separately.
        names = {p["name"].lower() for p in operation.get("parameters", [])}
        assert "authorization" not in names, f"{method} {path}"


def test_the_idempotency_key_routes_are_those_the_error_names(schema: dict[str, Any]) -> None:
    taking = {
        f"{method} {path}"
        for method, path, operation in operations(schema)
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "Idempotency-Key"
        and parameter["in"] == "header"
        and parameter["required"]
    }
    assert taking == set(IDEMPOTENT_ROUTES)


def test_every_example_is_one_tollgate_accepts_or_answers() -> None:
    checked = 0
    for model in vars(models).values():
        if not (
            inspect.isclass(model)
            and issubclass(model, BaseModel)
            and model.__module__ == models.__name__
        ):
            continue
        for example in model.model_json_schema().get("examples", []):
            model.model_validate(example)
            checked += 1
    assert checked >= 35, "the models' examples are found"


def test_the_error_examples_name_codes_tollgate_answers_with(schema: dict[str, Any]) -> None:
    codes = set(answered_codes())
    shown = set()
    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                continue
            media = response.get("content", {}).get("application/json", {})
            given = resolve(schema, media.get("schema", {})).get("examples", [])
            example = media.get("example") or (given[0] if given else None)
            assert example, f"{method} {path} {status}: no example"
            code = example["error"]["code"]
            assert code in codes, f"{method} {path} {status}: {code}"
            shown.add(code)
    assert {
        "unsupported_media_type",
        "insufficient_funds",
        "card_declined",
        "payment_required",
    } <= (shown)


def test_the_schema_is_whole(schema: dict[str, Any]) -> None:
    text = json.dumps(schema)
    assert "#/$defs" not in text and '"$defs"' not in text, "nested models are components"
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', text))
    assert refs <= set(schema["components"]["schemas"]), "every reference resolves"
    assert "HTTPValidationError" not in text, "Tollgate's 422 is its own error body"
    assert schema["info"]["version"] == version("tollgate")


def test_docs_page_and_its_files_come_from_tollgate() -> None:
    http = TestClient(create_app())  # no lifespan: these answers need no database
    page = http.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)="([^"]+)"|url: '([^']+)'""", page.text)
    loaded = [a or b for a, b in urls]
    assert len(loaded) == 4 and all(u.startswith("/") for u in loaded), loaded
    for url in loaded:
        assert http.get(url).status_code == 200, url
    script = http.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in script.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert http.get("/docs/assets/index.html").status_code == 404, "only the files /docs loads"
    assert http.get("/redoc").status_code == 404, "ReDoc loads from CDNs: not served"


def test_every_example_in_the_schema_fits_its_model(schema: dict[str, Any]) -> None:
    checked = 0
    for _, _, operation in operations(schema):
        for response in operation["responses"].values():
            for entry in response.get("content", {}).values():
                ref = entry.get("schema", {}).get("$ref", "")
                model = getattr(models, ref.rsplit("/", 1)[-1], None) if ref else None
                if "example" in entry and model is not None:
                    model.model_validate(entry["example"])
                    checked += 1
    assert checked > 100, "the error examples and the 402s are found"
