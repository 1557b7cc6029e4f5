"""Agent settings: environment first (`NATS_URL`, `PROCWATCH_AGENT_*`), flags override."""

from __future__ import annotations

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
