"""One attempt at delivering one notification (no retry: the notifier's sender schedules those).

    outcome = await send_once(ChannelTarget("webhook", "standard", url, None, secret), event,
                              settings=SendSettings(allow_private=False))

HTTP goes through procwatch_notify.http (keep-alive connections, each to an address checked
against SSRF and DNS rebinding, see targets.py); the whole attempt, DNS and TLS included, is
bounded by `timeout_s` (10 s). Email goes over SMTP (aiosmtplib).

Outcome: `ok` for a 2xx (or an accepted mail). `gone` for 410 (the channel is disabled).
`retry_after_s` from a 429's or 503's `Retry-After`. `retryable` False when the same request can
never succeed (400, 413, 422, or a refused target); everything else (5xx, 429, timeouts,
connection errors, other 4xx) is retried by the schedule.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlsplit

import aiosmtplib
import orjson

from procwatch_contracts.messages import AlertEvent
from procwatch_domain import crypto
from procwatch_notify import webhooks
from procwatch_notify.http import HttpClient, HttpError
from procwatch_notify.render import Request, render
from procwatch_notify.schedule import parse_retry_after
from procwatch_notify.targets import TargetRefused, check_url

DEFAULT_TIMEOUT_S = 10.0
PERMANENT_STATUSES = frozenset({400, 413, 422})
USER_AGENT = "procwatch-notifier/0.1"
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class ChannelTarget:
    """Where and how one channel sends (secrets decrypted)."""

    type: str  # webhook | slack | discord | email
    format: str = "standard"  # webhooks: standard | alertmanager
    url: str | None = None
    to: list[str] | None = None  # email addresses
    secret: str | None = None  # webhooks: whsec_...


def decrypt_target(channel_type: str, channel_format: str, target_encrypted: str,
                   secret_encrypted: str | None) -> ChannelTarget:
    """A stored channel's target, decrypted (the one definition, for the notifier and the API's
    test send): a URL, or for email a JSON list of addresses. Raises procwatch_domain.crypto's
    errors when the key is missing or wrong, ValueError when an email target is malformed."""
    plain = crypto.decrypt(target_encrypted)
    if channel_type == "email":
        to = orjson.loads(plain)
        if not isinstance(to, list) or not all(isinstance(a, str) for a in to):
            raise ValueError("email target is not a list of addresses")
        return ChannelTarget(channel_type, channel_format, None, to, None)
    secret = crypto.decrypt(secret_encrypted) if secret_encrypted else None
    return ChannelTarget(channel_type, channel_format, plain, None, secret)


@dataclass(frozen=True)
class SendSettings:
    allow_private: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    smtp_url: str | None = None  # smtp://user:pass@host:port, smtps://...
    mail_from: str = "procwatch@localhost"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    gone: bool = False
    retryable: bool = True


def outcome_of(status: int, retry_after: str | None, now_unix: float) -> Outcome:
    """What an HTTP status means for the delivery."""
    if 200 <= status < 300:
        return Outcome(ok=True, status_code=status)
    if status == 410:
        return Outcome(ok=False, status_code=status, error="410 Gone from receiver", gone=True, retryable=False)
    wait = parse_retry_after(retry_after, now_unix) if status in (429, 503) else None
    return Outcome(ok=False, status_code=status, error=f"HTTP {status}", retry_after_s=wait,
                   retryable=status not in PERMANENT_STATUSES)


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


async def post(client: HttpClient, url: str, request: Request, msg_id: str,
               secret: str | None, settings: SendSettings) -> Outcome:
    """POST one rendered request (signed per attempt when it is a webhook)."""
    try:
        check_url(url, settings.allow_private)
    except TargetRefused as exc:
        return Outcome(ok=False, error=exc.reason[:MAX_ERROR_CHARS], retryable=False)
    headers = {"user-agent": USER_AGENT, **request.headers}
    if request.signed and secret:
        headers.update(webhooks.headers(secret, msg_id, int(time.time()), request.body))
    try:
        async with asyncio.timeout(settings.timeout_s):
            response = await client.post(url, headers, request.body)
    except TargetRefused as exc:
        return Outcome(ok=False, error=exc.reason[:MAX_ERROR_CHARS], retryable=False)
    except TimeoutError:
        return Outcome(ok=False, error=f"timed out after {settings.timeout_s:g} s")
    except (HttpError, OSError) as exc:
        return Outcome(ok=False, error=_error(exc))
    return outcome_of(response.status, response.headers.get("retry-after"), time.time())


@dataclass(frozen=True)
class SmtpServer:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool


def parse_smtp_url(url: str) -> SmtpServer:
    """smtp://[user:pass@]host[:port] (STARTTLS when offered) or smtps://... (TLS from the start)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("SMTP URL must look like smtp://user:pass@host:port or smtps://...")
    tls = parts.scheme == "smtps"
    return SmtpServer(parts.hostname, parts.port or (465 if tls else 25),
                      unquote(parts.username) if parts.username else None,
                      unquote(parts.password) if parts.password else None, tls)


def email_message(request: Request, to: list[str], mail_from: str, msg_id: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = ", ".join(to)
    message["Subject"] = request.subject or "[procwatch] alert"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="procwatch")
    # Lets a mail filter (or a test) dedupe a message sent again after a retry.
    message["X-Procwatch-Alert-Id"] = msg_id
    message.set_content(request.body.decode())
    return message


async def send_mail(request: Request, to: list[str], msg_id: str, settings: SendSettings) -> Outcome:
    if not settings.smtp_url:
        return Outcome(ok=False, error="no SMTP server configured (PROCWATCH_SMTP_URL)")
    if not to:
        return Outcome(ok=False, error="no recipients", retryable=False)
    try:
        server = parse_smtp_url(settings.smtp_url)
    except ValueError as exc:
        return Outcome(ok=False, error=str(exc), retryable=False)
    message = email_message(request, to, settings.mail_from, msg_id)
    try:
        async with asyncio.timeout(settings.timeout_s):
            await aiosmtplib.send(message, hostname=server.hostname, port=server.port, username=server.username,
                                  password=server.password, use_tls=server.use_tls,
                                  timeout=settings.timeout_s)
    except TimeoutError:
        return Outcome(ok=False, error=f"timed out after {settings.timeout_s:g} s")
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return Outcome(ok=False, error=_error(exc), retryable=False)
    except (aiosmtplib.SMTPException, OSError) as exc:
        return Outcome(ok=False, error=_error(exc))
    return Outcome(ok=True, status_code=250)


async def deliver(channel: ChannelTarget, request: Request, msg_id: str, *, settings: SendSettings,
                  client: HttpClient | None = None) -> Outcome:
    """Send an already rendered request (an event's or a digest's) to `channel`, once."""
    if channel.type == "email":
        return await send_mail(request, channel.to or [], msg_id, settings)
    if not channel.url:
        return Outcome(ok=False, error="channel has no URL", retryable=False)
    if client is not None:
        return await post(client, channel.url, request, msg_id, channel.secret, settings)
    own = HttpClient(settings.allow_private)
    try:
        return await post(own, channel.url, request, msg_id, channel.secret, settings)
    finally:
        await own.aclose()


async def send_once(channel: ChannelTarget, event: AlertEvent, *, settings: SendSettings,
                    client: HttpClient | None = None, test: bool = False) -> Outcome:
    """Render `event` for `channel` and make one attempt (10 s at most). `client`: a shared
    HttpClient to reuse connections; without it one is opened for this call."""
    try:
        request = render(channel.type, channel.format, event, test=test)
    except ValueError as exc:
        return Outcome(ok=False, error=str(exc)[:MAX_ERROR_CHARS], retryable=False)
    return await deliver(channel, request, event.id, settings=settings, client=client)
