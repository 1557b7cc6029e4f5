"""Dashboard sign-in: session cookies, CSRF tokens, and the request dependencies built on them.

A session id is 256 random bits in an HttpOnly, SameSite=Strict cookie (Secure behind https);
the database keeps only its sha256 (web_sessions), like api_tokens. Each form carries a CSRF
token derived from the session id (HMAC-SHA256 keyed with it), which only a page served to the
cookie's holder can know; the sign-in form, before any session exists, uses a double-submit
cookie instead. POSTs from another origin (Origin header) are refused as well.

`session_or_token_user` is the dependency of routes that serve both the pages' scripts and API
clients (GET /events): the bearer token when the request has an Authorization header (exactly
deps.current_user), else the session cookie, with the same 401/429 order and rate limits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

from fastapi import Depends, Request
from starlette.datastructures import FormData

from procwatch_api.deps import current_user, read_body
from procwatch_api.errors import CsrfRefused, Unauthorized
from procwatch_api.hot_reads import admit, client_host
from procwatch_api.settings import ApiSettings
from procwatch_domain.secrets import hash_secret

SESSION_COOKIE = "procwatch_session"
SIGNIN_CSRF_COOKIE = "procwatch_signin_csrf"
CSRF_FIELD = "csrf"
SIGNIN_PATH = "/ui/signin"
# Rate-limit keys of sessions live beside the tokens' (a session hash is never a token hash).
_SESSION_KEY = "session:"


class SignInRequired(Exception):
    """A page was asked for without a valid session: the page handler redirects to sign-in."""


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(session_id: str) -> str:
    return hmac.new(session_id.encode(), b"procwatch-csrf", hashlib.sha256).hexdigest()


def cookie_secure(settings: ApiSettings, request: Request) -> bool:
    if settings.web_cookie_secure is not None:
        return settings.web_cookie_secure
    return request.url.scheme == "https"


def session_expiry(settings: ApiSettings, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) + timedelta(hours=settings.web_session_hours)


def cookie_options(settings: ApiSettings, request: Request) -> dict:
    return {"httponly": True, "samesite": "strict", "secure": cookie_secure(settings, request), "path": "/"}


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin (Origin header)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host") and parts.scheme == request.url.scheme


async def form_of(request: Request) -> FormData:
    """The posted form (application/x-www-form-urlencoded, what every page sends), read once and
    bounded like an API body (deps.read_body: PROCWATCH_API_MAX_BODY_BYTES, 413 beyond)."""
    cached = getattr(request.state, "form", None)
    if cached is None:
        body = await read_body(request)
        media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        # A urlencoded body is ASCII; parse_qsl decodes its percent-escapes as UTF-8.
        pairs = parse_qsl(body.decode("ascii", "replace"), keep_blank_values=True) \
            if media == "application/x-www-form-urlencoded" else []
        cached = request.state.form = FormData(pairs)
    return cached


@dataclass(frozen=True)
class WebUser:
    """The signed-in caller of a page: their user id and the CSRF token their forms carry."""

    user_id: int
    csrf: str


async def _session_user(request: Request) -> tuple[int, str]:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id or len(session_id) > 128:
        raise Unauthorized("sign in first")
    state = request.app.state
    session_hash = hash_secret(session_id)
    user_id = await state.reads.user_id_for_session(session_hash)
    return await admit(state, _SESSION_KEY + session_hash, user_id, client_host(request.scope)), session_id


async def session_or_token_user(request: Request) -> int:
    """The caller's user id from the bearer token (as deps.current_user) or else the session cookie.
    With neither, the API's own 401 (the same answer as every other route)."""
    if request.headers.get("authorization") is not None or SESSION_COOKIE not in request.cookies:
        return await current_user(request)
    user_id, _ = await _session_user(request)
    return user_id


async def page_user(request: Request) -> WebUser:
    """A page's caller; without a valid session, SignInRequired (a redirect to the sign-in page)."""
    try:
        user_id, session_id = await _session_user(request)
    except Unauthorized:
        raise SignInRequired() from None
    return WebUser(user_id, csrf_token(session_id))


async def form_user(request: Request) -> WebUser:
    """A form post's caller: a valid session, the same origin and the session's CSRF token."""
    user = await page_user(request)
    form = await form_of(request)
    sent = form.get(CSRF_FIELD)
    if not same_origin(request) or not isinstance(sent, str) or not hmac.compare_digest(sent, user.csrf):
        raise CsrfRefused()
    return user


async def check_signin_csrf(request: Request) -> None:
    """The sign-in form's double-submit check (there is no session yet to derive a token from)."""
    form = await form_of(request)
    sent, cookie = form.get(CSRF_FIELD), request.cookies.get(SIGNIN_CSRF_COOKIE)
    if not same_origin(request) or not isinstance(sent, str) or not cookie or not hmac.compare_digest(sent, cookie):
        raise CsrfRefused()


# Like deps.UserId and deps.Body, these come before deps.Repo in a route's parameters: the form is
# read whole (and checked) before a connection of the write pool is taken.
PageUser = Annotated[WebUser, Depends(page_user)]
FormUser = Annotated[WebUser, Depends(form_user)]
SigninCsrf = Annotated[None, Depends(check_signin_csrf)]
