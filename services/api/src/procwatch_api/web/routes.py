"""The dashboard's pages (server-rendered Jinja2, under /ui): parse the form, call the API's
service layer (service.py, channels_service.py: the same rules and SQL as the JSON routes),
render. What the pages add is in pages.py (pure) and repository.py (SQL).

Form posts redirect after success (303, so a reload does not post again) and re-render the
page with the messages beside the inputs after a validation failure. Every post carries the
session's CSRF token (sessions.form_user)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from procwatch_api import channels_service, service
from procwatch_api.channels_repository import ChannelRepository
from procwatch_api.deps import Repo, read_only_unit
from procwatch_api.errors import ApiError, NotFound
from procwatch_api.hot_reads import client_host
from procwatch_api.responses import error_response
from procwatch_api.web import pages
from procwatch_api.web.rendering import HERE, issues_of, redirect, redirect_back, render, templates
from procwatch_api.web.repository import WebRepository
from procwatch_api.web.sessions import (
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    SIGNIN_PATH,
    FormUser,
    PageUser,
    SigninCsrf,
    SignInRequired,
    cookie_options,
    form_of,
    new_secret,
    session_expiry,
)
from procwatch_domain.channels import CHANNEL_TYPES
from procwatch_domain.secrets import hash_secret
from procwatch_notify.send import SendSettings

log = logging.getLogger("procwatch.api.web")
router = APIRouter(prefix="/ui", include_in_schema=False, redirect_slashes=False)
SERVER = "/servers/{server_id}"
PROCESS = SERVER + "/processes/{process_id}"
# Failed sign-ins count per client address, beside the API's invalid tokens.
_SIGNIN_KEY = "signin:"


async def _fail(repo: Repo) -> None:
    """Undo a failed form's statements (an insert that hit a unique constraint aborts the
    transaction) before the page is read again on the same unit of work."""
    await repo.conn.rollback()


# --- sign-in -----------------------------------------------------------------


def _signin_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    token = request.cookies.get(SIGNIN_CSRF_COOKIE) or new_secret()
    response = render(request, "signin.html", status, signin_csrf=token, error=error, user=None)
    response.set_cookie(SIGNIN_CSRF_COOKIE, token, **cookie_options(request.app.state.settings, request))
    return response


def _signed_in(request: Request, session_id: str) -> Response:
    """To the fleet, with the new session's cookie (a new id at every sign-in: no fixation)."""
    response = redirect("/ui")
    options = cookie_options(request.app.state.settings, request)
    response.set_cookie(SESSION_COOKIE, session_id, max_age=request.app.state.settings.web_session_hours * 3600,
                        **options)
    response.delete_cookie(SIGNIN_CSRF_COOKIE, **options)
    return response


async def _new_session(request: Request, web: WebRepository, user_id: int) -> str:
    session_id = new_secret()
    await web.insert_session(user_id, hash_secret(session_id), session_expiry(request.app.state.settings))
    log.info("dashboard sign-in", extra={"user_id": user_id})
    return session_id


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    return _signin_page(request)


@router.post("/signin")
async def signin(request: Request, _csrf: SigninCsrf, repo: Repo) -> Response:
    form = await form_of(request)
    token = str(form.get("token", "")).strip()
    state = request.app.state
    user_id = await state.reads.user_id_for_token(hash_secret(token)) if token else None
    if user_id is None:
        await state.failed_auth_limiter.check(_SIGNIN_KEY + (client_host(request.scope) or "unknown"),
                                              subject="failed sign-ins from this address")
        return _signin_page(request, "That token is not valid (or was revoked).", status=401)
    return _signed_in(request, await _new_session(request, WebRepository(repo.conn), user_id))


@router.get("/signin/link")
async def signin_link(request: Request, repo: Repo, token: str = "") -> Response:
    """The one-time link `procwatch up` prints: used once, then gone."""
    web = WebRepository(repo.conn)
    user_id = await web.consume_signin_link(hash_secret(token)) if 0 < len(token) <= 128 else None
    if user_id is None:
        return _signin_page(request, "That sign-in link was already used or has expired. Paste a token instead.",
                            status=401)
    return _signed_in(request, await _new_session(request, web, user_id))


@router.post("/signout")
async def signout(request: Request, user: FormUser, repo: Repo) -> Response:
    await WebRepository(repo.conn).delete_session(hash_secret(request.cookies.get(SESSION_COOKIE, "")))
    response = redirect(SIGNIN_PATH)
    response.delete_cookie(SESSION_COOKIE, **cookie_options(request.app.state.settings, request))
    return response


# --- fleet and servers ----------------------------------------------------------


@router.get("")
async def fleet(request: Request, user: PageUser, repo: Repo) -> Response:
    servers = (await service.list_servers(repo, user.user_id))["servers"]
    counts = pages.fleet_counts(await WebRepository(repo.conn).processes_of_user(user.user_id))
    empty = dict.fromkeys(pages.FLEET_STATUSES, 0)
    return render(request, "fleet.html", user=user, nav="fleet",
                  servers=[{**s, "counts": counts.get(s["id"], empty)} for s in servers])


async def _server_page(request: Request, user: PageUser, repo: Repo, server_id: str, *,
                       form: dict[str, Any] | None = None, issues: dict[str, str] | None = None,
                       status: int = 200) -> Response:
    server = (await service.get_server(repo, user.user_id, server_id))["server"]
    plan = await repo.server_with_plan(user.user_id, server["id"])
    rows = await WebRepository(repo.conn).processes_of_server(user.user_id, server["id"])
    return render(request, "server.html", status, user=user, nav="fleet", server=server, plan=plan,
                  processes=[service.present_process(r) for r in rows], fields=pages.PROCESS_FORM_FIELDS,
                  form=form, issues=issues or {})


@router.get(SERVER)
async def server_page(request: Request, server_id: str, user: PageUser, repo: Repo) -> Response:
    return await _server_page(request, user, repo, server_id)


@router.post(SERVER + "/processes")
async def create_process(request: Request, server_id: str, user: FormUser, repo: Repo) -> Response:
    form = await form_of(request)
    body = pages.process_body(form)
    try:
        created = await service.create_process(repo, user.user_id, server_id, body)
    except ApiError as exc:
        if exc.status == 404:
            raise
        await _fail(repo)
        return await _server_page(request, user, repo, server_id, form=body, issues=issues_of(exc), status=exc.status)
    return redirect(f"/ui/servers/{created['process']['server_id']}#process-{created['process']['id']}")


# --- processes ---------------------------------------------------------------------


async def _process_page(request: Request, user: PageUser, repo: Repo, server_id: str, process_id: str, *,
                        form: dict[str, Any] | None = None, issues: dict[str, str] | None = None,
                        status: int = 200) -> Response:
    server = (await service.get_server(repo, user.user_id, server_id))["server"]
    _, row = await repo.process_of_owned_server(user.user_id, server["id"], service.parse_id(process_id) or 0)
    if row is None:
        raise NotFound("watched process not found")
    alerts = await service.list_alerts(repo, user.user_id, server_id, process_id, limit=None, cursor=None)
    return render(request, "process.html", status, user=user, nav="fleet", server=server,
                  process=service.present_process(row), samples_total=row["samples_total"],
                  alerts=alerts["alerts"], fields=pages.PROCESS_FORM_FIELDS, form=form, issues=issues or {})


@router.get(PROCESS)
async def process_page(request: Request, server_id: str, process_id: str, user: PageUser, repo: Repo) -> Response:
    return await _process_page(request, user, repo, server_id, process_id)


@router.get(PROCESS + "/series")
async def process_series(request: Request, server_id: str, process_id: str, user: PageUser, repo: Repo,
                         start: str | None = None, end: str | None = None) -> Response:
    """The chart's points over [start, end] (Unix seconds; default: everything retained)."""
    sid, pid = service.parse_id(server_id), service.parse_id(process_id)
    _, row = await repo.process_of_owned_server(user.user_id, sid or 0, pid or 0)
    if row is None:
        raise NotFound("watched process not found")
    span = pages.chart_range(pages.parse_time(start), pages.parse_time(end), row["created_at"])
    buckets = await WebRepository(repo.conn).buckets(row["id"], span.start, span.end, span.step_s)
    body = {**pages.chart_series(buckets), "start": span.start.timestamp(), "end": span.end.timestamp(),
            "step_s": span.step_s}
    return Response(orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"})


@router.post(PROCESS)
async def update_process(request: Request, server_id: str, process_id: str, user: FormUser, repo: Repo) -> Response:
    body = pages.process_body(await form_of(request))
    try:
        await service.update_process(repo, user.user_id, server_id, process_id, body)
    except ApiError as exc:
        if exc.status == 404:
            raise
        await _fail(repo)
        return await _process_page(request, user, repo, server_id, process_id, form=body, issues=issues_of(exc),
                                   status=exc.status)
    return redirect(f"/ui/servers/{quote(server_id)}/processes/{quote(process_id)}")


@router.post(PROCESS + "/enabled")
async def pause_or_resume(request: Request, server_id: str, process_id: str, user: FormUser, repo: Repo) -> Response:
    form = await form_of(request)
    await service.update_process(repo, user.user_id, server_id, process_id, {"enabled": form.get("enabled") == "1"})
    return redirect_back(form, f"/ui/servers/{quote(server_id)}")


@router.post(PROCESS + "/delete")
async def delete_process(request: Request, server_id: str, process_id: str, user: FormUser, repo: Repo) -> Response:
    await service.delete_process(repo, user.user_id, server_id, process_id)
    return redirect(f"/ui/servers/{quote(server_id)}")


# --- alerts -------------------------------------------------------------------------


@router.get("/alerts")
async def alerts_page(request: Request, user: PageUser, repo: Repo) -> Response:
    web = WebRepository(repo.conn)
    firing = [{**service.present_alert(r), **_where(r)} for r in await web.open_alerts(user.user_id)]
    recent = [{**service.present_alert(r), **_where(r)} for r in await web.recent_alerts(user.user_id)]
    return render(request, "alerts.html", user=user, nav="alerts", firing=firing, recent=recent)


def _where(row: dict[str, Any]) -> dict[str, Any]:
    return {"server_id": row["server_id"], "process_id": row["watched_process_id"],
            "process_name": row["process_name"], "hostname": row["server_hostname"]}


# --- channels -----------------------------------------------------------------------


async def _channels_page(request: Request, user: PageUser, repo: ChannelRepository, *,
                         form: dict[str, Any] | None = None, issues: dict[str, str] | None = None,
                         status: int = 200, created_secret: str | None = None,
                         test_result: dict[str, Any] | None = None) -> Response:
    channels = (await channels_service.list_channels(repo, user.user_id))["channels"]
    return render(request, "channels.html", status, user=user, nav="channels", channels=channels,
                  channel_types=CHANNEL_TYPES, form=form, issues=issues or {}, created_secret=created_secret,
                  test_result=test_result)


def _channel_body(form: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": str(form.get("type", "")), "name": str(form.get("name", "")).strip()}
    target = str(form.get("target", "")).strip()
    if body["type"] == "email":
        body["recipients"] = [r.strip() for r in target.replace(";", ",").split(",") if r.strip()]
    else:
        body["url"] = target
    return body


@router.get("/channels")
async def channels_page(request: Request, user: PageUser, repo: Repo) -> Response:
    return await _channels_page(request, user, ChannelRepository(repo.conn))


@router.post("/channels")
async def create_channel(request: Request, user: FormUser, repo: Repo) -> Response:
    form = await form_of(request)
    channels = ChannelRepository(repo.conn)
    try:
        created = await channels_service.create_channel(
            channels, user.user_id, _channel_body(form), allow_private=request.app.state.settings.allow_private_targets
        )
    except ApiError as exc:
        await _fail(repo)
        return await _channels_page(request, user, channels, form=dict(form), issues=issues_of(exc), status=exc.status)
    # A webhook's signing secret is shown once, as the JSON route does.
    return await _channels_page(request, user, channels, created_secret=created["channel"].get("secret"),
                                status=201)


@router.post("/channels/{channel_id}/delete")
async def delete_channel(request: Request, channel_id: str, user: FormUser, repo: Repo) -> Response:
    await channels_service.delete_channel(ChannelRepository(repo.conn), user.user_id, channel_id)
    return redirect("/ui/channels")


@router.post("/channels/{channel_id}/test")
async def test_channel(request: Request, channel_id: str, user: FormUser) -> Response:
    async with read_only_unit(request) as channels:
        found_id, target = await channels_service.channel_target(channels, user.user_id, channel_id)
    settings = request.app.state.settings
    result = await channels_service.send_test(
        target, user.user_id, found_id,
        SendSettings(allow_private=settings.allow_private_targets, smtp_url=settings.smtp_url,
                     mail_from=settings.mail_from),
    )
    async with read_only_unit(request) as channels:
        return await _channels_page(request, user, channels, test_result={"channel_id": found_id, **result})


@router.get("/channels/{channel_id}")
async def channel_page(request: Request, channel_id: str, user: PageUser, repo: Repo) -> Response:
    channels = ChannelRepository(repo.conn)
    channel = (await channels_service.get_channel(channels, user.user_id, channel_id))["channel"]
    deliveries = await channels_service.list_deliveries(channels, user.user_id, channel_id, limit=None, cursor=None)
    return render(request, "channel.html", user=user, nav="channels", channel=channel,
                  deliveries=deliveries["deliveries"])


# --- wiring --------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Mount the pages, their static files, and the handlers that make a missing session a
    redirect and an error under /ui a page (elsewhere: the API's error body, as before)."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return redirect("/ui")

    async def sign_in_required(request: Request, exc: SignInRequired) -> Response:
        return redirect(SIGNIN_PATH)

    async def api_error(request: Request, exc: ApiError) -> Response:
        if not request.url.path.startswith("/ui/") and request.url.path != "/ui" or \
                request.url.path.endswith("/series"):
            return error_response(exc)
        response = render(request, "error.html", exc.status, user=None, error=exc)
        for name, value in exc.headers.items():
            response.headers[name] = value
        return response

    try:
        from procwatch_api.web import ack_windows_routes
    except ImportError:  # alerts_service / maintenance_service (issue 18) are not in this tree
        log.info("dashboard without acknowledgement and maintenance windows")
    else:
        app.include_router(ack_windows_routes.router)
        templates.env.globals["has_ack_and_windows"] = True
    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(ApiError, api_error)

