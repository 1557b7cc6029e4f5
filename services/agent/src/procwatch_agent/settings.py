"""Agent settings: environment first (`NATS_URL`, `PROCWATCH_AGENT_*`), flags override."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from procwatch_runtime.settings import ConnectionSettings


class AgentSettings(ConnectionSettings):
    model_config = SettingsConfigDict(env_prefix="PROCWATCH_AGENT_", extra="ignore")

    # PROCWATCH_AGENT_SERVER_ID / PROCWATCH_AGENT_KEY: the server this agent reports for
    # and its key (issued once when the server was created through the API).
    server_id: int | None = Field(default=None, ge=1)
    key: SecretStr = SecretStr("")
    # Overrides the interval the watch-list reply asks for (seconds).
    interval: float | None = Field(default=None, gt=0)
    # Used until the first watch-list reply arrives (and with --once).
    names: list[str] = Field(default_factory=list)
    # How many ticks are kept while the broker is unreachable (oldest dropped first).
    buffer_ticks: int = Field(default=360, ge=1)
    # Tick interval until a watch-list reply says otherwise.
    default_interval: float = Field(default=10.0, gt=0)
    config_timeout: float = Field(default=2.0, gt=0)
    publish_timeout: float = Field(default=2.0, gt=0)
    # Shortest interval a watch-list reply may ask for (protects the host and the broker).
    min_interval: float = Field(default=1.0, gt=0)
    # How the agent learns that a watched PID exited between ticks (docs/agent.md):
    # auto = pidfd where the kernel has it, else poll; tick = only at the next tick.
    exit_watch: Literal["auto", "pidfd", "poll", "tick"] = "auto"
    # The poll mode's period (seconds): the watched PIDs' /proc/<pid>/stat is re-read this often.
    exit_poll_interval: float = Field(default=0.25, gt=0)
    # Exits this close together go out as one out-of-cadence sample (milliseconds).
    urgent_coalesce_ms: float = Field(default=5.0, ge=0)
    # At most this many out-of-cadence samples in any 60 s; 0 turns them off (deaths then wait for the tick).
    urgent_max_per_minute: int = Field(default=60, ge=0)
    # Seconds after an out-of-cadence sample to scan its names again and report a respawn
    # (then after 2x, 4x, 8x, 16x that); 0: off.
    respawn_recheck: float = Field(default=1.0, ge=0)
