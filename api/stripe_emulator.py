"""A local Stripe emulator (localstripe) for development and tests, in its own process."""

from __future__ import annotations

import ctypes
import signal
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


def bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on ``host:port`` now, or None when it could. Binds as
    servers do, with SO_REUSEADDR (localstripe and uvicorn both set it): a port whose last
    connections are still closing (TIME_WAIT, just after a restart) is free, one something
    listens on is not."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return exc
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as exc:
                return exc
    return None


def emulator_bind_error(port: int) -> OSError | None:
    """bind_error for the address localstripe listens on: every interface, IPv6 and IPv4
    (``::``), or every IPv4 one where the machine has no IPv6."""
    if socket.has_ipv6:
        try:
            socket.socket(socket.AF_INET6).close()
        except OSError:
            pass
        else:
            return bind_error("::", port)
    return bind_error("0.0.0.0", port)


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


def _die_with_parent() -> None:
    """In the child, before exec: be sent SIGTERM when the parent dies (Linux), so a killed
    ``tollgate dev`` leaves no emulator holding its port."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent stops it when it can
        pass


_PR_SET_PDEATHSIG = 1


def start(
    port: int, *, log: int | None = subprocess.DEVNULL, die_with_parent: bool = False
) -> subprocess.Popen[bytes]:
    """Start localstripe with an empty store; returns once it accepts connections. With
    ``die_with_parent`` it stops when the calling process dies, however it dies (call it from
    the main thread: the signal follows the thread that started it)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        preexec_fn=_die_with_parent if die_with_parent else None,
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
