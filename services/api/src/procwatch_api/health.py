"""/healthz (the process is alive), /readyz (its dependencies answer), /metrics (Prometheus). No
bearer token: /metrics answers only clients in the settings' metrics_allowed_networks (else 404)."""

from __future__ import annotations

import asyncio
import ipaddress

from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.responses import Response

from procwatch_api.errors import NotFound
from procwatch_api.responses import json_response
from procwatch_api.schemas import Ready
from procwatch_runtime import metrics

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


async def _check(coro) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await coro
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


async def _postgres(engine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("select 1"))


async def _nats(state) -> None:
    nc = state.nats
    if nc is None or not nc.is_connected:
        raise ConnectionError("not connected")
    await nc.flush(timeout=CHECK_TIMEOUT_S)


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
async def readyz(request: Request) -> Response:
    state = request.app.state
    postgres, redis, nats = await asyncio.gather(
        _check(_postgres(state.engine)), _check(state.redis.ping()), _check(_nats(state))
    )
    checks = {"postgres": postgres, "redis": redis, "nats": nats}
    ready = all(v == "ok" for v in checks.values())
    return json_response({"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503)


def metrics_allowed(client: str | None, networks: list[str]) -> bool:
    """Whether a client address may read /metrics (a client the server could not name may not)."""
    try:
        address = ipaddress.ip_address(client or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in networks)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    settings = request.app.state.settings
    client = request.client.host if request.client else None
    if not settings.metrics_enabled or not metrics_allowed(client, settings.metrics_allowed_networks):
        raise NotFound("no such route")
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
