"""Tollgate's thin HTTP layer: validate the shape of a request, call one function, map to HTTP."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The installed distribution's version (pyproject.toml), told by the OpenAPI schema and the
    # MCP server alike.
    __version__ = version("tollgate")
except PackageNotFoundError:  # a checkout run without installing it
    __version__ = "0+unknown"
