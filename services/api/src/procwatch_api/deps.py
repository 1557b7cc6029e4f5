"""Request dependencies: the request body, the caller, and the unit of work (one transaction per request).

A route declares them in that order, so FastAPI resolves them in that order: the body is read
whole (bounded in size here and in time by slow_clients.BodyDeadline) and the caller
authenticated and rate-limited before a connection of the write pool is checked out. A slow or
stalled client therefore holds no pooled connection. The hot reads (hot_reads.py) use none of
these but authenticate with the same hot_reads.admit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, Request

from procwatch_api import service
from procwatch_api.alerts_repository import AlertsRepository
from procwatch_api.channels_repository import ChannelRepository
from procwatch_api.errors import BodyTooLarge
from procwatch_api.hot_reads import admit, client_host
from procwatch_api.maintenance_repository import MaintenanceRepository
from procwatch_api.repository import Repository


async def read_body(request: Request) -> bytes:
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


Body = Annotated[bytes, Depends(read_body)]


async def current_user(request: Request) -> int:
    """The caller's user id: 401 without a valid token, then 429 over its rate limit. The token is
    looked up on the read pool (one autocommit statement), not on the request's unit of work."""
    state = request.app.state
    token_hash = service.caller_token_hash(request.headers.get("authorization"))
    user_id = await state.reads.user_id_for_token(token_hash)
    return await admit(state, token_hash, user_id, client_host(request.scope))


UserId = Annotated[int, Depends(current_user)]


def json_object(request: Request, body: bytes) -> dict[str, Any]:
    return service.decode_json_object(body, request.headers.get("content-type"))


async def unit_of_work(request: Request) -> AsyncIterator[Repository]:
    """Commit when the route returns, roll back when it raises; wake the outbox relay after a commit.

    scope="function" below: the commit happens before the response is sent, so a
    client never sees a success that was not committed.
    """
    state = request.app.state
    async with state.engine.connect() as conn:
        repo = Repository(conn)
        try:
            yield repo
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()
    if repo.outbox_rows:
        state.wake_relay()


Repo = Annotated[Repository, Depends(unit_of_work, scope="function")]


def channels_of_unit_of_work(repo: Repo) -> ChannelRepository:
    """The channels' SQL (channels_repository) on the request's unit of work."""
    return ChannelRepository(repo.conn)


ChannelsRepo = Annotated[ChannelRepository, Depends(channels_of_unit_of_work)]


def maintenance_of_unit_of_work(repo: Repo) -> MaintenanceRepository:
    """The maintenance windows' SQL (maintenance_repository) on the request's unit of work."""
    return MaintenanceRepository(repo.conn)


MaintenanceRepo = Annotated[MaintenanceRepository, Depends(maintenance_of_unit_of_work)]


def alerts_of_unit_of_work(repo: Repo) -> AlertsRepository:
    """The acknowledgements' SQL (alerts_repository) on the request's unit of work (its outbox rows wake
    the relay after the commit)."""
    return AlertsRepository(repo)


AlertsRepo = Annotated[AlertsRepository, Depends(alerts_of_unit_of_work)]


@asynccontextmanager
async def read_only_unit(request: Request) -> AsyncIterator[ChannelRepository]:
    """A short transaction for a route that then waits on something else (the channel test's
    HTTP request): its connection goes back to the pool before the wait."""
    async with request.app.state.engine.connect() as conn:
        yield ChannelRepository(conn)
