"""The app's route table as (full path, APIRoute), for the tests that walk every route."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.routing import APIRoute


def walk_routes(routes, prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif hasattr(route, "original_router"):  # FastAPI >= 0.16x keeps included routers nested
            context = getattr(route, "include_context", None)
            yield from walk_routes(route.original_router.routes, prefix + (getattr(context, "prefix", "") or ""))
