"""`procwatch`: the one command line entry point.

    procwatch up        the whole system on one machine (embedded servers unless *_URL set)
    procwatch api       the HTTP API alone (containers)
    procwatch ingest    the sample consumer alone
    procwatch alerter   the alert evaluator alone
    procwatch nats-auth the NATS auth callout responder (admits agents by their keys)
    procwatch notifier  the alert deliverer alone (webhooks, Slack, Discord, email)
    procwatch agent     the agent that reports a server's processes
    procwatch migrate   apply database migrations
    procwatch admin …   users, plans and tokens
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from procwatch_runtime.logs import configure_logging


def _run_service(module_name: str, env: dict[str, str] | None = None) -> int:
    for key, value in (env or {}).items():
        if value is not None:
            os.environ[key] = str(value)
    module = importlib.import_module(module_name)
    module.main()
    return 0


def _run_agent(argv: list[str]) -> int:
    from procwatch_agent.app import main as agent_main

    return agent_main(argv) or 0


def _cmd_up(args: argparse.Namespace) -> int:
    from procwatch.stack import run_stack

    return run_stack(data_dir=args.data_dir, api_port=args.api_port, with_agent=not args.no_agent,
                     nats_cluster=args.nats_cluster, partitions=args.partitions)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from procwatch.stack import resolve_database_url
    from procwatch_db.migrate import upgrade

    url = resolve_database_url(args.data_dir)
    upgrade(url)
    logging.getLogger("procwatch").info("migrations applied")
    return 0


def _cmd_admin(args: argparse.Namespace) -> int:
    from procwatch import admin

    return admin.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="procwatch", description="Process monitoring for fleets of servers.")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole system on this machine")
    up.add_argument("--data-dir", default=".procwatch", help="where embedded servers keep data (default ./.procwatch)")
    up.add_argument("--api-port", type=int, default=8000)
    # A new user's first sight is their own machine's processes, live: the agent runs by default.
    up.add_argument("--no-agent", action="store_true", help="do not run the agent for the demo server on this machine")
    up.add_argument("--with-agent", action="store_true", help=argparse.SUPPRESS)  # the old opt-in, now the default
    up.add_argument("--nats-cluster", type=int, default=1, choices=(1, 3),
                    help="embedded NATS nodes: 3 runs a cluster with every stream at R3 (default 1)")
    up.add_argument("--partitions", type=int, default=None,
                    help="ingest and alerter processes, one per partition of servers "
                         "(default 2 with a cluster, else 1)")
    up.set_defaults(func=_cmd_up)

    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    api.set_defaults(
        func=lambda a: _run_service(
            "procwatch_api.app", {"PROCWATCH_API_HOST": a.host, "PROCWATCH_API_PORT": a.port}
        )
    )

    ingest = sub.add_parser("ingest", help="run the sample consumer")
    ingest.set_defaults(func=lambda a: _run_service("procwatch_ingest.app"))

    alerter = sub.add_parser("alerter", help="run the alert evaluator")
    alerter.set_defaults(func=lambda a: _run_service("procwatch_alerter.app"))

    nats_auth = sub.add_parser("nats-auth", help="run the NATS auth callout responder (agents' broker identities)")
    nats_auth.set_defaults(func=lambda a: _run_service("procwatch_ingest.auth_callout"))
    notifier = sub.add_parser("notifier", help="deliver alerts to notification channels")
    notifier.set_defaults(func=lambda a: _run_service("procwatch_notifier.app"))

    agent = sub.add_parser("agent", help="report this server's watched processes (see `procwatch agent --help`)",
                           add_help=False)
    agent.add_argument("agent_args", nargs=argparse.REMAINDER)
    agent.set_defaults(func=lambda a: _run_agent(a.agent_args))

    migrate = sub.add_parser("migrate", help="apply database migrations (DATABASE_URL or --data-dir's stack.json)")
    migrate.add_argument("--data-dir", default=".procwatch")
    migrate.set_defaults(func=_cmd_migrate)

    from procwatch import admin

    admin.add_parser(sub).set_defaults(func=_cmd_admin)
    return parser


def _split_agent_args(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`procwatch [--log-level L] agent ARGS…`: ARGS go untouched to the agent's own
    parser (argparse.REMAINDER in a subparser drops ARGS that start with an option)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "agent":
            return argv[: i + 1], argv[i + 1 :]
        if arg == "--log-level":
            i += 2
            continue
        if not arg.startswith("-"):
            break  # another command
        i += 1
    return argv, None


def main(argv: list[str] | None = None) -> int:
    head, agent_args = _split_agent_args(sys.argv[1:] if argv is None else list(argv))
    if agent_args is not None:
        # The agent runs on every monitored server: the full parser would import the other
        # commands' dependencies (psycopg, ...) into it for nothing.
        lean = argparse.ArgumentParser(prog="procwatch", add_help=False)
        lean.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
        configure_logging(lean.parse_known_args(head)[0].log_level)
        return _run_agent(agent_args)
    args = build_parser().parse_args(head)
    configure_logging(args.log_level)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
