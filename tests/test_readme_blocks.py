"""README's runnable blocks run as written against `make dev`.

A block marked ``<!-- runnable: NAME -->`` (the line before its ```sh fence) is a promise that
it runs, as it stands, in a shell that follows the README from the top. The test keeps it: it
starts a real `tollgate dev` (embedded PostgreSQL, Stripe emulator, API: what `make dev` runs)
in a folder laid out like a checkout (``.tollgate``, the data folder, and ``.venv``), then runs
every marked block there, in order, in one bash (``-e -o pipefail``: a failing command fails the
test), and checks what each one printed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import stripe_emulator
from db import embedded

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^<!-- runnable: ([a-z0-9-]+) -->\n```sh\n(.*?)^```\n", re.M | re.S)
SEPARATOR = "=== README block "

# What each block must print (regular expressions, searched in its stdout and stderr).
EXPECTED: dict[str, list[str]] = {
    "setup": [r"^tollgate \d+\.\d+"],
    "agent-flow": [
        r'"allowed":false,.*"code":"payment_required"',
        r'"allowed":true,"via":"payment"',
    ],
    "credits": [
        r"webhook applied: payment succeeded\ncredits of dev_account: 5\.00 USD",
        r'"captured_amount":"0\.30"',
        r'"name":"main","currency":"USD","balance":"4\.70"',
        r"the emulator declined card 4000000000000341",
        r"declined, as it should be",
    ],
    "operators": [
        r"  dev_account  account  active  tollgate dev\n",
        r"requires_payment_method \|\s+1\n\s*succeeded\s+\|\s+2\n",
        r"^3 already applied$",
    ],
    "http-agent": [r'"amount":"12\.50"', r"HTTP/1\.1 402"],
    "transactions": [r'"status":"settled"', r'"balance":"1255\.20"'],
    "risk-rules": [r'"max_amount":"500\.00"'],
    "reconcile": [r"order-1043\s+missing_ours", r"1 matched, 1 mismatched"],
}
# What no block may print.
UNEXPECTED = [r"Traceback", r"internal_error", r"\brepaired\b", r"command not found"]


def runnable_blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_every_runnable_block_is_checked() -> None:
    names = [name for name, _ in runnable_blocks()]
    assert len(names) == len(set(names)), "each runnable block has a name of its own"
    assert set(names) == set(EXPECTED), "a block marked runnable, or an expectation, is missing"
    markers = README.read_text(encoding="utf-8").count("<!-- runnable:")
    assert markers == len(names) + 1, "every marker is followed by a ```sh block (one is prose)"


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    """A folder like a checkout after `make dev`: .venv (this one) and .tollgate, the data
    folder of a real `tollgate dev` running on free ports with no configuration at all."""
    home = tmp_path / "checkout"
    home.mkdir()
    (home / ".venv").symlink_to(Path(sys.prefix))
    data_dir = home / ".tollgate"
    port, stripe_port = stripe_emulator.free_port(), stripe_emulator.free_port()
    configured = ("DATABASE_URL", "TOLLGATE_", "STRIPE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(configured)}
    log = (tmp_path / "dev.log").open("wb")
    ports = ["--port", str(port), "--stripe-port", str(stripe_port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "--data-dir", str(data_dir), "dev", *ports],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        stripe_emulator.wait_for_port(port, timeout=120, process=process)
        yield home
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        pgdata = data_dir / "pgdata"
        if (pgdata / "postmaster.pid").exists():  # killed before it stopped its server
            embedded.EmbeddedServer(pgdata).pg_ctl("-w", "-m", "immediate", "stop")


def run_blocks(home: Path, blocks: list[tuple[str, str]]) -> tuple[int, dict[str, str]]:
    script = "".join(f"printf '\\n{SEPARATOR}%s\\n' {name}\n{code}" for name, code in blocks)
    configured = ("DATABASE_URL", "TOLLGATE_", "STRIPE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(configured)}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # no tollgate: the setup block brings it
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    printed: dict[str, str] = {}
    for part in done.stdout.split(f"\n{SEPARATOR}")[1:]:
        name, _, output = part.partition("\n")
        printed[name] = output
    return done.returncode, printed


def test_the_runnable_blocks_run_as_written_against_tollgate_dev(
    checkout: Path, tmp_path: Path
) -> None:
    blocks = runnable_blocks()
    code, printed = run_blocks(checkout, blocks)
    last = list(printed)[-1] if printed else "(none)"
    log = (tmp_path / "dev.log").read_text(errors="replace")[-3000:]
    assert code == 0, f"block {last} failed ({code}):\n{printed.get(last)}\n--- dev log\n{log}"
    assert list(printed) == [name for name, _ in blocks], "every block ran, in order"
    for name, output in printed.items():
        for pattern in EXPECTED[name]:
            assert re.search(pattern, output, re.M), f"block {name}: no {pattern!r} in\n{output}"
        for pattern in UNEXPECTED:
            assert not re.search(pattern, output), f"block {name}: {pattern!r} in\n{output}"
