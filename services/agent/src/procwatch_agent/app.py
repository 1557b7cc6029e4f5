"""`procwatch agent`: wiring only — flags and environment in, the agent loop out.

    procwatch agent                          # env: NATS_URL, PROCWATCH_AGENT_SERVER_ID, PROCWATCH_AGENT_KEY
    procwatch agent --server-id 12 --agent-key pwa_… --nats-url nats://broker:4222
    procwatch agent --once --server-id 12 --name nginx --name postgres   # one sample to stdout
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from procwatch_agent.runner import Agent, build_sample, utc_now_ms
from procwatch_agent.settings import AgentSettings

log = logging.getLogger("procwatch.agent")

# --once reads the table twice this far apart so CPU% is a real measurement, not 0.
ONCE_CPU_WINDOW_S = 0.5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="procwatch agent",
                                description="Report this server's watched processes to procwatch over NATS.")
    p.add_argument("--nats-url", help="broker URL (env NATS_URL)")
    p.add_argument("--server-id", type=int, help="the server this agent reports for (env PROCWATCH_AGENT_SERVER_ID)")
    p.add_argument("--agent-key", help="the server's agent key (env PROCWATCH_AGENT_KEY; prefer the env var: "
                                       "flags are visible in the process list)")
    p.add_argument("--interval", type=float, help="tick interval in seconds, overriding the server's setting "
                                                  "(env PROCWATCH_AGENT_INTERVAL)")
    p.add_argument("--buffer-ticks", type=int,
                   help="samples kept while the broker is unreachable, oldest dropped first (default 360; "
                        "env PROCWATCH_AGENT_BUFFER_TICKS)")
    p.add_argument("--name", action="append", dest="names", metavar="NAME",
                   help="a process name to watch (repeatable); used until the first watch-list reply, "
                        "and by --once instead of asking the broker")
    p.add_argument("--once", action="store_true", help="print one sample as JSON to stdout and exit")
    return p


def load_settings(args: argparse.Namespace) -> AgentSettings:
    overrides = {
        "nats_url": args.nats_url,
        "server_id": args.server_id,
        "key": args.agent_key,
        "interval": args.interval,
        "buffer_ticks": args.buffer_ticks,
        "names": args.names,
    }
    base = AgentSettings()
    return AgentSettings.model_validate({**base.model_dump(),
                                         "key": base.key.get_secret_value(),
                                         **{k: v for k, v in overrides.items() if v is not None}})


async def run_once(settings: AgentSettings) -> str:
    """One sample as JSON: for --name names, else for the list the broker replies with."""
    agent = Agent(settings)
    try:
        if not agent.names:
            agent.start_connecting()
            if not await agent.wait_connected(settings.config_timeout + 3):
                raise RuntimeError("broker unreachable at the configured NATS URL")
            if not await agent.refresh_watch_list():
                raise RuntimeError("no watch list: give --name NAME or check the server id and agent key")
        names = agent.names
        agent.collector.collect(names)  # first reading: CPU needs two
        await asyncio.sleep(ONCE_CPU_WINDOW_S)
        sample = build_sample(agent.server_id, utc_now_ms(), agent.collector.collect(names))
        return sample.model_dump_json()
    finally:
        await agent.close()


async def run_forever(settings: AgentSettings) -> None:
    agent = Agent(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    await agent.run()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        print(f"procwatch agent: invalid settings: {exc}", file=sys.stderr)
        return 2
    if settings.server_id is None:
        print("procwatch agent: a server id is required (--server-id or PROCWATCH_AGENT_SERVER_ID)", file=sys.stderr)
        return 2
    if args.once:
        try:
            print(asyncio.run(run_once(settings)))
        except RuntimeError as exc:
            print(f"procwatch agent: {exc}", file=sys.stderr)
            return 1
        return 0
    if not settings.key.get_secret_value():
        print("procwatch agent: an agent key is required (PROCWATCH_AGENT_KEY or --agent-key)", file=sys.stderr)
        return 2
    asyncio.run(run_forever(settings))
    return 0
