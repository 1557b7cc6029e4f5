"""`procwatch up`: the whole system on one machine.

1. Resolve PostgreSQL, Redis and NATS: the `*_URL` variables when set, else
   embedded real servers under the data directory (see embedded.py).
2. Apply migrations; on the first run create a demo user and print its token.
3. Run the services (api, ingest, alerter, notifier, the NATS auth callout
   responder when NATS is embedded, and, unless --no-agent, an agent for the demo
   server) as child processes; restart any service or embedded server that dies,
   with backoff. With --nats-cluster 3 NATS is an embedded 3-node cluster (streams at R3), and
   ingest and the alerter run one process per partition of servers (--partitions, 2 by default
   then; docs/scaling.md). Unless PROCWATCH_SMTP_URL is set, a local mail catcher
   (mailcatcher.py) takes the alert emails and writes each to DIR/mail/ as a .eml file.
4. Write `DIR/stack.json` (mode 0600: its URLs carry the servers' passwords) and
   print the URLs with the dashboard's and a one-time sign-in link; on Ctrl-C / SIGTERM stop the services first, then the servers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from procwatch.embedded import (
    EmbeddedNats,
    EmbeddedNatsCluster,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServer,
    claim_port,
    free_port,
    port_is_free,
    write_private,
)
from procwatch.mailcatcher import MailCatcher

log = logging.getLogger("procwatch.up")

STACK_FILE = "stack.json"
DEMO_FILE = "demo.json"  # ids of the demo user and server; never the token
DEMO_EMAIL = "demo@procwatch.local"
# Watched on the demo server from the first run: the servers `up` itself runs,
# so `up` (which runs the agent unless --no-agent) shows live processes at once.
DEMO_PROCESSES = ("postgres", "nats-server", "redis-server")
SERVICES = ("api", "ingest", "alerter", "notifier")
NATS_AUTH_SERVICE = "nats-auth"  # the auth callout responder (procwatch_ingest.auth_callout)
WORKER_SERVICES = ("ingest", "alerter", "notifier")  # each with its health endpoint, /metrics included
PARTITIONED_SERVICES = ("ingest", "alerter")  # one process per partition (PROCWATCH_<SERVICE>_PARTITION)


@dataclass
class Backoff:
    """When to restart a supervised process that died: 1 s, 2 s, 4 s … at most 30 s."""

    restarts: int = 0
    next_start: float = 0.0

    def noticed(self, now: float) -> float | None:
        """Call while the process is down: the delay chosen when the death is new, else None."""
        if self.next_start:
            return None
        self.restarts += 1
        delay = min(30.0, 0.5 * 2 ** min(self.restarts, 6))
        self.next_start = now + delay
        return delay

    def due(self, now: float) -> bool:
        if self.next_start and now >= self.next_start:
            self.next_start = 0.0
            return True
        return False


def resolve_database_url(data_dir: str | os.PathLike) -> str:
    """DATABASE_URL, else the one a running `procwatch up` wrote to DIR/stack.json."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    stack_file = Path(data_dir) / STACK_FILE
    if stack_file.exists():
        return json.loads(stack_file.read_text())["database_url"]
    raise SystemExit(
        f"no database: set DATABASE_URL, or start `procwatch up --data-dir {data_dir}` first "
        f"(it writes {stack_file})"
    )


@dataclass
class ChildService:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    # Extra environment of this process (a partition's number), kept when the URLs change.
    own_env: dict[str, str] = field(default_factory=dict)
    backoff: Backoff = field(default_factory=Backoff)

    def start(self) -> None:
        logfile = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=logfile, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        logfile.close()
        log.info("service started", extra={"service": self.name, "pid": self.proc.pid})

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # services drain in-flight work on SIGTERM
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("service did not stop in time; killing", extra={"service": self.name})
            self.proc.kill()
            self.proc.wait()


@dataclass
class Stack:
    data_dir: Path
    api_port: int
    servers: list[EmbeddedServer] = field(default_factory=list)
    children: list[ChildService] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    metrics_urls: dict[str, str] = field(default_factory=dict)  # worker child -> its /metrics
    server_backoff: dict[str, Backoff] = field(default_factory=dict)
    mail: MailCatcher | None = None
    # NATS nodes (1: one embedded server) and partitions of ingest and the alerter.
    nats_nodes: int = 1
    partitions: int = 1
    nats_cluster: EmbeddedNatsCluster | None = None

    # -- servers -----------------------------------------------------------

    def _previous_ports(self) -> dict[str, int]:
        path = self.data_dir / STACK_FILE
        try:
            return json.loads(path.read_text()).get("ports", {})
        except (OSError, ValueError):
            return {}

    def start_servers(self) -> None:
        ports = self._previous_ports()
        wanted = {
            "database_url": ("DATABASE_URL", EmbeddedPostgres, "postgres"),
            "redis_url": ("REDIS_URL", EmbeddedRedis, "redis"),
            "nats_url": ("NATS_URL", EmbeddedNats, "nats"),
        }
        for key, (env_name, cls, sub) in wanted.items():
            if os.environ.get(env_name):
                self.urls[key] = os.environ[env_name]
                log.info("using external server", extra={"server": sub})
                continue
            if cls is EmbeddedNats and self.nats_nodes > 1:
                self.nats_cluster = EmbeddedNatsCluster(self.data_dir / "nats-cluster", self.nats_nodes, ports)
                self.urls[key] = self.nats_cluster.start()
                self.servers.extend(self.nats_cluster.nodes)
                continue
            server = cls(self.data_dir / sub, port=ports.get(sub, 0))
            self.urls[key] = server.start()
            self.servers.append(server)
        if not os.environ.get("PROCWATCH_SMTP_URL"):
            self.mail = MailCatcher(self.data_dir / "mail")
            self.urls["smtp_url"] = self.mail.start()

    @property
    def embedded_nats(self) -> EmbeddedNats | EmbeddedNatsCluster | None:
        if self.nats_cluster is not None:
            return self.nats_cluster
        return next((s for s in self.servers if isinstance(s, EmbeddedNats)), None)

    def supervise_servers_once(self) -> None:
        """Restart an embedded server that died, with the services' backoff. Its port is kept when
        free; if it had to move, the services restart with the new URLs."""
        now = time.monotonic()
        for server in self.servers:
            if server.running:
                continue
            backoff = self.server_backoff.setdefault(server.name, Backoff())
            delay = backoff.noticed(now)
            if delay is not None:
                code = server.proc.returncode if server.proc is not None else None
                log.warning("embedded server exited; restarting",
                            extra={"server": server.name, "code": code, "in_s": delay})
            elif backoff.due(now):
                old_url = server.url
                try:
                    server.start()
                except Exception as exc:  # the supervisor itself must keep running; the next round retries
                    log.warning("embedded server did not restart",
                                extra={"server": server.name, "error": type(exc).__name__, "detail": str(exc)[:200]})
                    server.stop()
                    continue
                log.info("embedded server restarted", extra={"server": server.name, "restarts": backoff.restarts})
                if server.url != old_url:
                    self._moved(old_url, server.url)

    def _moved(self, old_url: str, new_url: str) -> None:
        # A cluster node's URL is one of several in NATS_URL.
        key = next(k for k, v in self.urls.items() if old_url in v.split(","))
        self.urls[key] = ",".join(new_url if u == old_url else u for u in self.urls[key].split(","))
        log.warning("embedded server moved to a new port; restarting the services", extra={"url_key": key})
        env = self.service_env()
        for child in self.children:
            child.stop()
            child.env = {**self._env_for(child.name, env), **child.own_env}
            child.start()
        self.write_stack_file()

    def stop_servers(self) -> None:
        if self.mail is not None:
            self.mail.stop()
        for server in reversed(self.servers):
            server.stop()

    # -- schema and demo data --------------------------------------------------

    def migrate(self) -> None:
        from procwatch_db.migrate import upgrade

        upgrade(self.urls["database_url"])

    def ensure_demo_user(self) -> str | None:
        """On the first run: a demo user, a token and a server for this machine. Returns the token."""
        import socket

        import psycopg

        from procwatch_db import accounts
        from procwatch_db.urls import libpq_url
        from procwatch_domain.secrets import hash_secret, new_agent_key

        demo_file = self.data_dir / DEMO_FILE
        with psycopg.connect(libpq_url(self.urls["database_url"])) as conn:
            if accounts.find_user_id(conn, DEMO_EMAIL) is not None and demo_file.exists():
                return None
            user_id = accounts.find_user_id(conn, DEMO_EMAIL) or accounts.create_user(conn, DEMO_EMAIL, "pro")
            token = accounts.create_api_token(conn, user_id, "demo")
            agent_key = new_agent_key()
            (server_id,) = conn.execute(
                "insert into servers (user_id, hostname, agent_key_hash) values (%s, %s, %s) returning id",
                (user_id, socket.gethostname(), hash_secret(agent_key)),
            ).fetchone()
            conn.cursor().executemany(
                "insert into watched_processes (server_id, user_id, process_name) values (%s, %s, %s)",
                [(server_id, user_id, name) for name in DEMO_PROCESSES],
            )
        # The agent key is a local secret of this machine's demo agent (like an
        # agent's config file); it is never stored in the database.
        write_private(demo_file, json.dumps({"user_id": user_id, "server_id": server_id, "agent_key": agent_key}))
        return token

    def signin_link(self) -> str | None:
        """A one-time dashboard sign-in link for the demo user (a new one every start)."""
        import psycopg

        from procwatch_db import accounts
        from procwatch_db.urls import libpq_url

        with psycopg.connect(libpq_url(self.urls["database_url"])) as conn:
            user_id = accounts.find_user_id(conn, DEMO_EMAIL)
            if user_id is None:
                return None
            token = accounts.create_signin_link_token(conn, user_id)
        return signin_url(self.urls["api_url"], token)

    def demo(self) -> dict:
        try:
            return json.loads((self.data_dir / DEMO_FILE).read_text())
        except (OSError, ValueError):
            return {}

    # -- services --------------------------------------------------------------

    def service_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.urls["database_url"],
            REDIS_URL=self.urls["redis_url"],
            NATS_URL=self.urls["nats_url"],
            PROCWATCH_API_HOST="127.0.0.1",
            PROCWATCH_API_PORT=str(self.api_port),
        )
        from procwatch_domain import crypto

        # Channel secrets are encrypted with it (procwatch_domain.crypto): a 0600 file of the data dir.
        if not env.get(crypto.SECRETS_KEY_ENV):
            env[crypto.SECRETS_KEY_ENV] = crypto.ensure_key_file(self.data_dir / crypto.SECRETS_KEY_FILE)
        if self.nats_cluster is not None:
            env["PROCWATCH_NATS_REPLICAS"] = str(min(3, self.nats_nodes))
        if self.partitions > 1:
            env["PROCWATCH_INGEST_PARTITIONS"] = env["PROCWATCH_ALERTER_PARTITIONS"] = str(self.partitions)
        if "smtp_url" in self.urls:
            env["PROCWATCH_SMTP_URL"] = self.urls["smtp_url"]
        # Channels on this machine (a local receiver, the demo) are private addresses.
        env.setdefault("PROCWATCH_NOTIFIER_ALLOW_PRIVATE_TARGETS", "1")
        return env

    def _env_for(self, name: str, env: dict[str, str]) -> dict[str, str]:
        if name == NATS_AUTH_SERVICE:
            nats = self.embedded_nats
            return dict(env, PROCWATCH_NATS_AUTH_ISSUER_SEED=nats.issuer_seed if nats else "")
        if name == "agent":
            # The demo agent connects as itself (agent-<id> + its key, checked by the auth callout),
            # never with the services' credentials.
            demo = self.demo()
            server_id, key = demo.get("server_id"), demo.get("agent_key", "")
            nats = self.embedded_nats
            agent_env = dict(env, PROCWATCH_AGENT_SERVER_ID=str(server_id or ""), PROCWATCH_AGENT_KEY=key)
            if nats is not None and server_id:
                agent_env["NATS_URL"] = nats.agent_url(server_id, key)
            return agent_env
        return env

    def start_services(self, with_agent: bool) -> None:
        exe = [sys.executable, "-m", "procwatch.cli"]
        env = self.service_env()
        names = list(SERVICES)
        if self.embedded_nats is not None:
            names.append(NATS_AUTH_SERVICE)
        if with_agent:
            names.append("agent")
        for name in names:
            if name in PARTITIONED_SERVICES and self.partitions > 1:
                for k in range(self.partitions):
                    own = {f"PROCWATCH_{name.upper()}_PARTITION": str(k), **self._health_env(f"{name}-{k}", name)}
                    self.children.append(ChildService(f"{name}-{k}", exe + [name], {**self._env_for(name, env), **own},
                                                      self.data_dir / f"{name}-{k}.log", own_env=own))
                continue
            own = self._health_env(name, name) if name in WORKER_SERVICES else {}
            self.children.append(ChildService(name, exe + [name], {**self._env_for(name, env), **own},
                                              self.data_dir / f"{name}.log", own_env=own))
        for child in self.children:
            child.start()

    def _health_env(self, child: str, service: str) -> dict[str, str]:
        """A worker's health endpoint (/healthz, /readyz, /metrics) on a port of its own, kept across
        its restarts; the URLs go to stack.json for a local Prometheus or curl."""
        port = free_port()
        self.metrics_urls[child] = f"http://127.0.0.1:{port}/metrics"
        return {f"PROCWATCH_{service.upper()}_HEALTH_PORT": str(port)}

    def supervise_once(self) -> None:
        """Restart a service that died, with a growing delay (at most 30 s)."""
        now = time.monotonic()
        for child in self.children:
            if not child.exited():
                continue
            delay = child.backoff.noticed(now)
            if delay is not None:
                log.warning(
                    "service exited; restarting",
                    extra={"service": child.name, "code": child.proc.returncode, "in_s": delay,
                           "log": str(child.log_path)},
                )
            elif child.backoff.due(now):
                child.start()

    def stop_services(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def wait_api_ready(self, timeout: float = 60.0) -> None:
        url = f"{self.urls['api_url']}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            api = next(c for c in self.children if c.name == "api")
            if api.exited():
                raise RuntimeError(f"the API exited during start; see {api.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"the API did not answer {url} within {timeout}s")

    def write_stack_file(self) -> Path:
        path = self.data_dir / STACK_FILE
        ports = {s.name: s.port for s in self.servers}
        if self.nats_cluster is not None:
            ports.update(self.nats_cluster.ports())
        metrics = {"api": f"{self.urls['api_url']}/metrics", **self.metrics_urls}
        write_private(path, json.dumps({**self.urls, "ports": ports, "metrics": metrics}, indent=2))
        return path


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):  # noqa: ARG001
    # The first signal starts the clean stop; a second Ctrl-C (or a SIGTERM from a supervisor, or uv
    # forwarding the same Ctrl-C) must not interrupt it halfway, leaving servers running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stop()


def run_stack(data_dir: str, api_port: int, with_agent: bool = False, nats_cluster: int = 1,
              partitions: int | None = None) -> int:
    if partitions is None:
        partitions = 2 if nats_cluster > 1 else 1
    stack = Stack(Path(data_dir).resolve(), api_port, nats_nodes=nats_cluster, partitions=partitions)
    stack.data_dir.mkdir(parents=True, exist_ok=True)
    stack.data_dir.chmod(0o700)  # secrets, logs and data of this stack: its user's alone
    claim_port(api_port)  # the embedded servers pick theirs before the API binds this one
    if not port_is_free(api_port):
        print(f"port {api_port} is in use; choose another with --api-port", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        stack.start_servers()
        stack.migrate()
        token = stack.ensure_demo_user()
        stack.urls["api_url"] = f"http://127.0.0.1:{api_port}"
        stack.start_services(with_agent)
        stack.wait_api_ready()
        stack_file = stack.write_stack_file()
        _print_banner(stack, stack_file, token, stack.signin_link())
        while True:
            stack.supervise_servers_once()
            stack.supervise_once()
            time.sleep(0.5)
    except _Stop:
        log.info("stopping")
    finally:
        # Nor may a signal interrupt a stop that began otherwise (a failed start).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop_services()
        stack.stop_servers()
        log.info("stopped")
    return 0


def signin_url(api_url: str, token: str) -> str:
    """The dashboard's one-time sign-in link (procwatch_api.web: GET /ui/signin/link)."""
    return f"{api_url}/ui/signin/link?token={token}"


def _print_banner(stack: Stack, stack_file: Path, token: str | None, signin_link: str | None) -> None:
    from procwatch_db import accounts

    u = stack.urls
    demo = stack.demo()
    lines = [
        "",
        "procwatch is up.",
        f"  dashboard:    {u['api_url']}/ui",
    ]
    if signin_link:
        lines.append(f"  sign in once: {signin_link}  (valid {accounts.SIGNIN_LINK_TTL_S // 60} min, one use)")
    lines += [
        f"  api_url:      {u['api_url']}",
        f"  nats_url:     {u['nats_url']}",
        f"  database_url: {u['database_url']}",
        f"  redis_url:    {u['redis_url']}",
        f"  (written to {stack_file})",
        "",
    ]
    server = demo.get("server_id", "<server_id>")
    if token:
        lines += [
            f"A demo user ({DEMO_EMAIL}) was created. Its token is shown only now:",
            f"  curl -H 'Authorization: Bearer {token}' {u['api_url']}/servers/{server}/processes",
        ]
    else:
        lines += [
            f"Demo user: {DEMO_EMAIL} (its token was printed on the first run). A new token:",
            f"  uv run procwatch admin create-token --email {DEMO_EMAIL} --data-dir {stack.data_dir}",
        ]
    lines += ["", "Ctrl-C stops everything."]
    print("\n".join(lines), flush=True)
