"""All SQL of the channels resource (/channels): a user's notification channels and their deliveries.

Runs on the request's unit of work (deps.ChannelsRepo: the connection of repository.Repository,
one transaction, never committed here). Every statement names the owner, so another user's
channel is never read or changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from procwatch_api.repository import RowQueries

CHANNEL_COLUMNS = (
    "id, type, name, format, target_hint, alert_types, server_ids, send_resolved, enabled, disabled_reason,"
    " repeat_every_s, created_at, updated_at"
)
DELIVERY_COLUMNS = (
    "id, alert_id, alert_type, alert_state, status, attempts, last_status_code, last_error, next_attempt_at,"
    " created_at, delivered_at, reminder"
)
# The columns a create or an update may write (values prepared by channels_service).
WRITABLE = ("name", "format", "target_encrypted", "target_hint", "secret_encrypted", "alert_types", "server_ids",
            "send_resolved", "enabled", "disabled_reason", "repeat_every_s")


@dataclass
class UserChannels:
    """A user's plan and how many channels the user has."""

    plan: str
    count: int


@dataclass
class StoredTarget:
    """What sending to a channel needs, still encrypted."""

    type: str
    format: str
    target_encrypted: str
    secret_encrypted: str | None


class ChannelRepository(RowQueries):
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def lock_user_channels(self, user_id: int) -> UserChannels:
        """Locks the user's row until the transaction ends, so concurrent creates count one after
        another; the count is a second statement (one that waited for the lock sees the new rows)."""
        row = await self._one("select plan from users where id = :uid for update", uid=user_id)
        assert row is not None  # the caller was just authenticated as this user
        count = await self._one("select count(*) as n from channels where user_id = :uid", uid=user_id)
        return UserChannels(plan=row["plan"], count=int(count["n"]) if count else 0)

    async def owned_server_ids(self, user_id: int, server_ids: list[int]) -> set[int]:
        rows = await self._all(
            "select id from servers where user_id = :uid and id = any(:ids)", uid=user_id, ids=server_ids
        )
        return {r["id"] for r in rows}

    async def list_channels(self, user_id: int) -> list[dict[str, Any]]:
        return await self._all(f"select {CHANNEL_COLUMNS} from channels where user_id = :uid order by id", uid=user_id)

    async def get_channel(self, user_id: int, channel_id: int) -> dict[str, Any] | None:
        return await self._one(
            f"select {CHANNEL_COLUMNS} from channels where id = :cid and user_id = :uid", cid=channel_id, uid=user_id
        )

    async def stored_target(self, user_id: int, channel_id: int) -> StoredTarget | None:
        row = await self._one(
            "select type, format, target_encrypted, secret_encrypted from channels where id = :cid and user_id = :uid",
            cid=channel_id, uid=user_id,
        )
        return StoredTarget(**row) if row else None

    async def insert_channel(self, user_id: int, channel_type: str, fields: dict[str, Any]) -> dict[str, Any]:
        return await self._insert_owned("channels", user_id, {"type": channel_type, **fields}, CHANNEL_COLUMNS)

    async def update_channel(self, user_id: int, channel_id: int, fields: dict[str, Any]) -> dict[str, Any] | None:
        return await self._update_owned("channels", channel_id, user_id, fields, CHANNEL_COLUMNS)

    async def delete_channel(self, user_id: int, channel_id: int) -> bool:
        return await self._delete_owned("channels", channel_id, user_id)

    async def deliveries_page(self, channel_id: int, before_id: int | None, limit: int) -> list[dict[str, Any]]:
        """Newest first (ix_deliveries_channel_newest)."""
        return await self._all(
            f"select {DELIVERY_COLUMNS} from deliveries where channel_id = :cid"
            " and (cast(:before as bigint) is null or id < cast(:before as bigint))"
            " order by id desc limit :n",
            cid=channel_id, before=before_id, n=limit,
        )

