"""`procwatch admin`: users, plans and API tokens, straight on the database; the channels' secrets key.

The database comes from DATABASE_URL, else from `--data-dir`'s stack.json
(written by a running `procwatch up`). Tokens are printed once and stored only
as hashes. The secrets key comes from PROCWATCH_SECRETS_KEY, else from
`--data-dir`'s secrets.key (written by `procwatch up`); see docs/notifications.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import psycopg

from procwatch_db import accounts
from procwatch_db.urls import libpq_url
from procwatch_domain import crypto
from procwatch_domain.channels import email_problem


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    admin = sub.add_parser("admin", help="users, plans and tokens")
    admin.add_argument("--data-dir", default=".procwatch")
    cmds = admin.add_subparsers(dest="admin_command", required=True)

    create = cmds.add_parser("create-user", help="create a user and print a bearer token")
    create.add_argument("--email", required=True)
    create.add_argument("--plan", default="pro")
    create.add_argument("--json", action="store_true", help='print {"user_id", "token"}')

    plan = cmds.add_parser("set-plan", help="change a user's plan")
    plan.add_argument("--email", required=True)
    plan.add_argument("--plan", required=True)

    token = cmds.add_parser("create-token", help="print a new bearer token for a user")
    token.add_argument("--email", required=True)
    token.add_argument("--name", default="")
    token.add_argument("--json", action="store_true")

    link = cmds.add_parser("signin-link", help="print a one-time dashboard sign-in link for a user (15 minutes)")
    link.add_argument("--email", required=True)
    link.add_argument("--url", default=None, help="the API's base URL (default: --data-dir's stack.json api_url)")

    revoke = cmds.add_parser("revoke-token", help="revoke a bearer token (read from --token or stdin)")
    revoke.add_argument("--token", default=None)

    cmds.add_parser("new-secrets-key", help="print a new key for PROCWATCH_SECRETS_KEY (touches no database)")
    rotate = cmds.add_parser(
        "rotate-secrets-key",
        help="re-encrypt every channel secret with the newest key of PROCWATCH_SECRETS_KEY (or --data-dir's"
             " secrets.key); with --add-new-key, first put a new key in front of the data dir's key file",
    )
    rotate.add_argument("--add-new-key", action="store_true",
                        help="`procwatch up`'s key file: prepend a new key (the old ones keep decrypting)")
    rotate.add_argument("--drop-old-keys", action="store_true",
                        help="`procwatch up`'s key file: after re-encrypting, keep only the newest key")
    for p in (create, plan, token, link, revoke, rotate):
        p.add_argument("--data-dir", default=argparse.SUPPRESS)
    return admin


def _fail(message: str) -> int:
    print(f"procwatch admin: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from procwatch.stack import resolve_database_url

    if args.admin_command == "new-secrets-key":
        print(crypto.new_key())
        return 0
    if args.admin_command == "rotate-secrets-key":
        try:
            args.keys, args.key_file = _secrets_keys(args)
        except crypto.SecretsKeyError as exc:
            return _fail(str(exc))
    url = libpq_url(resolve_database_url(args.data_dir))
    try:
        with psycopg.connect(url) as conn:
            return _dispatch(conn, args)
    except accounts.UnknownPlan as exc:
        return _fail(str(exc))
    except psycopg.errors.UniqueViolation:
        return _fail(f"a user with email {args.email!r} already exists")
    except psycopg.OperationalError as exc:
        return _fail(f"cannot reach the database: {exc}")


def _user_id(conn: psycopg.Connection, email: str) -> int:
    user_id = accounts.find_user_id(conn, email)
    if user_id is None:
        raise SystemExit(f"procwatch admin: no user with email {email!r}")
    return user_id


def _dispatch(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    cmd = args.admin_command
    if cmd == "create-user":
        problem = email_problem(args.email)
        if problem:
            return _fail(problem)
        user_id = accounts.create_user(conn, args.email, args.plan)
        token = accounts.create_api_token(conn, user_id, "admin")
        print(json.dumps({"user_id": user_id, "token": token}) if args.json else token)
    elif cmd == "set-plan":
        accounts.set_plan(conn, _user_id(conn, args.email), args.plan)
        print(f"{args.email}: plan {args.plan}")
    elif cmd == "create-token":
        user_id = _user_id(conn, args.email)
        token = accounts.create_api_token(conn, user_id, args.name)
        print(json.dumps({"user_id": user_id, "token": token}) if args.json else token)
    elif cmd == "signin-link":
        from procwatch.stack import STACK_FILE, signin_url

        base = args.url
        if base is None:
            try:
                base = json.loads((Path(args.data_dir) / STACK_FILE).read_text())["api_url"]
            except (OSError, ValueError, KeyError):
                base = "http://127.0.0.1:8000"
        print(signin_url(base.rstrip("/"), accounts.create_signin_link_token(conn, _user_id(conn, args.email))))
    elif cmd == "revoke-token":
        secret = args.token or sys.stdin.readline().strip()
        if not accounts.revoke_api_token(conn, secret):
            return _fail("no such active token")
        print("revoked")
    elif cmd == "rotate-secrets-key":
        try:
            count = rotate_secrets(conn, args.keys)
        except crypto.SecretUnreadable as exc:
            return _fail(f"{exc}; nothing was changed")
        print(f"re-encrypted the secrets of {count} channel(s) with the newest key")
        if args.drop_old_keys:
            args.key_file.write_text(crypto.keys_of(args.key_file.read_text())[0] + "\n")
            print(f"{args.key_file}: only the newest key is left; restart `procwatch up`")
    return 0


def _secrets_keys(args: argparse.Namespace) -> tuple[crypto.Keyring, Path | None]:
    """The keys to rotate with: PROCWATCH_SECRETS_KEY when set (a deployment's), else the data
    dir's secrets.key (`procwatch up`'s; then also that file, which the flags edit)."""
    path = Path(args.data_dir) / crypto.SECRETS_KEY_FILE
    value = os.environ.get(crypto.SECRETS_KEY_ENV)
    if value:
        if args.add_new_key or args.drop_old_keys:
            raise crypto.SecretsKeyError(
                f"--add-new-key/--drop-old-keys edit {path}; with {crypto.SECRETS_KEY_ENV} set, put a new key first"
                " in the variable yourself (procwatch admin new-secrets-key) and run without them")
        return crypto.keyring(value), None
    if not path.exists():
        raise crypto.SecretsKeyError(f"{crypto.SECRETS_KEY_ENV} is not set and there is no {path}")
    if args.add_new_key:
        path.write_text(",".join([crypto.new_key(), *crypto.keys_of(path.read_text())]) + "\n")
        print(f"{path}: a new key is first, the old ones still decrypt; restart `procwatch up` so that the"
              " services encrypt with it")
    return crypto.keyring(path.read_text()), path


def rotate_secrets(conn: psycopg.Connection, keys: crypto.Keyring) -> int:
    """Every channel's target and signing secret, encrypted again with the newest key, in one
    transaction (all or nothing). The rows are locked while it runs; the API keeps working with
    either key (MultiFernet decrypts with any of them)."""
    rows = conn.execute(
        "select id, target_encrypted, secret_encrypted from channels order by id for update"
    ).fetchall()
    updates = [
        (crypto.reencrypt(target, keys), crypto.reencrypt(secret, keys) if secret else None, channel_id)
        for channel_id, target, secret in rows
    ]
    with conn.cursor() as cur:
        cur.executemany("update channels set target_encrypted = %s, secret_encrypted = %s where id = %s", updates)
    return len(updates)
