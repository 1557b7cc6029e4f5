"""`procwatch admin`: users, plans and API tokens, straight on the database.

The database comes from DATABASE_URL, else from `--data-dir`'s stack.json
(written by a running `procwatch up`). Tokens are printed once and stored only
as hashes.
"""

from __future__ import annotations

import argparse
import json
import sys

import psycopg

from procwatch_db import accounts
from procwatch_db.urls import libpq_url
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

    revoke = cmds.add_parser("revoke-token", help="revoke a bearer token (read from --token or stdin)")
    revoke.add_argument("--token", default=None)
    for p in (create, plan, token, revoke):
        p.add_argument("--data-dir", default=argparse.SUPPRESS)
    return admin


def _fail(message: str) -> int:
    print(f"procwatch admin: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from procwatch.stack import resolve_database_url

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
    elif cmd == "revoke-token":
        secret = args.token or sys.stdin.readline().strip()
        if not accounts.revoke_api_token(conn, secret):
            return _fail("no such active token")
        print("revoked")
    return 0
