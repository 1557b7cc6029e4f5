"""All SQL of /maintenance-windows: a user's maintenance windows.

Runs on the request's unit of work (deps.MaintenanceRepo: the connection of repository.Repository,
one transaction, never committed here). Every statement names the owner.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from procwatch_api.repository import RowQueries

WINDOW_COLUMNS_SQL = (
    "id, user_id, name, starts_at, ends_at, rrule, duration_s, timezone, server_ids, process_ids, ended_at,"
    " effective_until, created_at, updated_at"
)
# The columns a create or an update may write (values prepared by maintenance_service).
WRITABLE = ("name", "starts_at", "ends_at", "rrule", "duration_s", "timezone", "server_ids", "process_ids",
            "ended_at", "effective_until")


class MaintenanceRepository(RowQueries):
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def lock_user_window_count(self, user_id: int) -> int:
        """Locks the user's row until the transaction ends (concurrent creates count one after
        another), then counts the user's windows."""
        await self._one("select id from users where id = :uid for update", uid=user_id)
        row = await self._one("select count(*) as n from maintenance_windows where user_id = :uid", uid=user_id)
        return int(row["n"]) if row else 0

    async def owned_server_ids(self, user_id: int, server_ids: list[int]) -> set[int]:
        rows = await self._all("select id from servers where user_id = :uid and id = any(:ids)",
                               uid=user_id, ids=server_ids)
        return {r["id"] for r in rows}

    async def owned_process_ids(self, user_id: int, process_ids: list[int]) -> set[int]:
        rows = await self._all("select id from watched_processes where user_id = :uid and id = any(:ids)",
                               uid=user_id, ids=process_ids)
        return {r["id"] for r in rows}

    async def list_windows(self, user_id: int) -> list[dict[str, Any]]:
        return await self._all(f"select {WINDOW_COLUMNS_SQL} from maintenance_windows where user_id = :uid"
                               " order by id", uid=user_id)

    async def get_window(self, user_id: int, window_id: int, *, lock: bool = False) -> dict[str, Any] | None:
        return await self._one(
            f"select {WINDOW_COLUMNS_SQL} from maintenance_windows where id = :wid and user_id = :uid"
            + (" for update" if lock else ""),
            wid=window_id, uid=user_id,
        )

    async def insert_window(self, user_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        return await self._insert_owned("maintenance_windows", user_id, fields, WINDOW_COLUMNS_SQL)

    async def update_window(self, user_id: int, window_id: int, fields: dict[str, Any]) -> dict[str, Any] | None:
        return await self._update_owned("maintenance_windows", window_id, user_id, fields, WINDOW_COLUMNS_SQL)

    async def delete_window(self, user_id: int, window_id: int) -> bool:
        return await self._delete_owned("maintenance_windows", window_id, user_id)
