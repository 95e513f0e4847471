"""A local Stripe emulator (localstripe) for development and tests, in its own process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_or_free(port: int) -> int:
    """``port`` if nothing listens there, else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def wait_for_port(
    port: int, *, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process meant to listen on port {port} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on 127.0.0.1:{port} after {timeout} s"
                ) from None
            time.sleep(0.05)


def start(port: int, *, log: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start localstripe with an empty store; returns once it accepts connections."""
    process = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )
    try:
        wait_for_port(port, process=process)
    except BaseException:
        process.kill()
        raise
    return process


def register_webhook(api_base: str, *, name: str, url: str, secret: str) -> None:
    """Point the emulator's webhook ``name`` at ``url``, signing with ``secret``."""
    data = urllib.parse.urlencode({"url": url, "secret": secret}).encode()
    request = urllib.request.Request(
        f"{api_base}/_config/webhooks/{name}", data=data, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"registering the webhook failed: HTTP {response.status}")
