"""/healthz (the process is alive) and /readyz (its dependencies answer). No auth."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.responses import Response

from procwatch_api.responses import json_response
from procwatch_api.schemas import Ready

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
