"""Tollgate's thin HTTP layer: validate the shape of a request, call one function, map to HTTP."""
