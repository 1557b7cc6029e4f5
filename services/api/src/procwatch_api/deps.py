"""Request dependencies: the unit of work (one transaction per request) and the caller.

The list and get routes of processes use neither: they authenticate in the same
statement that reads (repository.Reads), from `service.caller_token_hash`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from procwatch_api import service
from procwatch_api.errors import BodyTooLarge
from procwatch_api.repository import Repository


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


async def current_user(request: Request, repo: Repo) -> int:
    """The caller's user id: checked before anything else a route does, then rate-limited."""
    token_hash = service.caller_token_hash(request.headers.get("authorization"))
    user_id = await service.authenticate(repo, token_hash)
    await request.app.state.rate_limiter.check(token_hash)
    return user_id


UserId = Annotated[int, Depends(current_user)]


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


async def json_object(request: Request) -> dict:
    return service.decode_json_object(await read_body(request), request.headers.get("content-type"))
