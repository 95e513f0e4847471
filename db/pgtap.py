"""Make pgTAP available in a database, installing it when the server lacks it.

Order of attempts:
1. ``CREATE EXTENSION pgtap`` - the server has it (e.g. Debian's postgresql-NN-pgtap).
2. The extension files, from ``PGTAP_DIR`` or a cache, else fetched as Debian's
   ``postgresql-15-pgtap`` package with ``apt-get download`` (no root needed) and unpacked
   with ``dpkg-deb``. For the embedded server they are copied into its extension folder and
   the extension is created; for any other server the install script is run as plain SQL in
   the database (pgTAP supports being loaded that way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from db import embedded

DEBIAN_PACKAGE = "postgresql-15-pgtap"


class PgTapUnavailable(RuntimeError):
    pass


def _apt_download(folder: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "download", DEBIAN_PACKAGE], cwd=folder, capture_output=True, text=True
    )


def _fetch_from_debian(cache: Path) -> Path:
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise PgTapUnavailable(
            f"pgTAP is not installed on the server and {', '.join(missing)} is not available to "
            f"fetch it. Install pgTAP on the server (Debian/Ubuntu: apt-get install "
            f"{DEBIAN_PACKAGE}) or set PGTAP_DIR to a folder holding pgtap.control and "
            "pgtap--*.sql."
        )
    with tempfile.TemporaryDirectory() as tmp:
        done = _apt_download(tmp)
        if done.returncode != 0 and os.geteuid() == 0:
            # A fresh machine may have no package lists yet; as root we can fetch them.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            done = _apt_download(tmp)
        debs = list(Path(tmp).glob("*.deb"))
        if done.returncode != 0 or not debs:
            raise PgTapUnavailable(
                f"pgTAP is not installed on the server and `apt-get download {DEBIAN_PACKAGE}` "
                f"failed:\n{done.stderr.strip()}\nRun `apt-get update` (as root) first, install "
                "pgTAP on the server, or set PGTAP_DIR to a folder holding pgtap.control and "
                "pgtap--*.sql."
            )
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
        found = next(unpacked.glob("usr/share/postgresql/*/extension/pgtap.control"), None)
        if found is None:
            raise PgTapUnavailable(f"{debs[0].name} holds no pgtap.control")
        cache.mkdir(parents=True, exist_ok=True)
        for path in found.parent.glob("pgtap*"):
            shutil.copy2(path, cache / path.name)
    return cache


def extension_files(cache: Path, override: Path | None = None) -> Path:
    """A folder with pgtap.control and pgtap--VERSION.sql, fetching it once if needed."""
    for folder in (override, cache):
        if folder is not None and (folder / "pgtap.control").exists():
            return folder
    return _fetch_from_debian(cache)


def _install_script(folder: Path) -> Path:
    control = (folder / "pgtap.control").read_text()
    version = next(
        line.split("=", 1)[1].strip().strip("'")
        for line in control.splitlines()
        if line.strip().startswith("default_version")
    )
    return folder / f"pgtap--{version}.sql"


def install(
    conn: psycopg.Connection[object],
    cache: Path,
    *,
    embedded_server: bool,
    override: Path | None = None,
) -> str:
    """Make pgTAP's functions callable in ``conn``'s database; return how it was done."""
    conn.autocommit = True
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
        return "extension"
    except (psycopg.errors.UndefinedFile, psycopg.errors.FeatureNotSupported):
        pass
    folder = extension_files(cache, override)
    target = embedded.extension_dir() if embedded_server else None
    if target is not None and target.exists():
        for path in folder.glob("pgtap*"):
            shutil.copy2(path, target / path.name)
        conn.execute("CREATE EXTENSION pgtap")
        return "extension (copied into the embedded server)"
    script = _install_script(folder).read_text()
    body = "\n".join(line for line in script.splitlines() if not line.startswith("\\"))
    conn.execute(body.replace("@extschema@", "public").encode())
    return "script"
