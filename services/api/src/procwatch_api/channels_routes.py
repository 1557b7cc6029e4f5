"""HTTP routes of /channels: parse, call channels_service, render (like routes.py).

Dependencies in the same order as routes.py: caller, body, unit of work.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from procwatch_api import channels_service as service
from procwatch_api.channels_schemas import (
    ChannelCreate,
    ChannelList,
    ChannelOne,
    ChannelUpdate,
    DeliveryPage,
    TestResult,
)
from procwatch_api.deps import Body, ChannelsRepo, UserId, json_object, read_only_unit
from procwatch_api.responses import json_response
from procwatch_api.schemas import Ok, errors, request_body
from procwatch_notify.send import SendSettings

router = APIRouter(redirect_slashes=False, tags=["channels"])

CHANNELS = "/channels"
CHANNEL = CHANNELS + "/{channel_id}"


def _allow_private(request: Request) -> bool:
    return request.app.state.settings.allow_private_targets


@router.get(CHANNELS, response_model=ChannelList, responses=errors())
async def list_channels(user_id: UserId, repo: ChannelsRepo) -> Response:
    return json_response(await service.list_channels(repo, user_id))


@router.post(CHANNELS, status_code=201, response_model=ChannelOne, responses=errors(400, 402, 413),
             openapi_extra=request_body(ChannelCreate))
async def create_channel(request: Request, user_id: UserId, body: Body, repo: ChannelsRepo) -> Response:
    created = await service.create_channel(repo, user_id, json_object(request, body),
                                           allow_private=_allow_private(request))
    return json_response(created, status=201)


@router.get(CHANNEL, response_model=ChannelOne, responses=errors(404))
async def get_channel(channel_id: str, user_id: UserId, repo: ChannelsRepo) -> Response:
    return json_response(await service.get_channel(repo, user_id, channel_id))


@router.put(CHANNEL, response_model=ChannelOne, responses=errors(400, 404, 413),
            openapi_extra=request_body(ChannelUpdate))
async def update_channel(channel_id: str, request: Request, user_id: UserId, body: Body,
                         repo: ChannelsRepo) -> Response:
    return json_response(await service.update_channel(repo, user_id, channel_id, json_object(request, body),
                                                      allow_private=_allow_private(request)))


@router.delete(CHANNEL, response_model=Ok, responses=errors(404))
async def delete_channel(channel_id: str, user_id: UserId, repo: ChannelsRepo) -> Response:
    return json_response(await service.delete_channel(repo, user_id, channel_id))


@router.get(CHANNEL + "/deliveries", response_model=DeliveryPage, responses=errors(400, 404))
async def list_deliveries(
    channel_id: str, user_id: UserId, repo: ChannelsRepo,
    limit: str | None = Query(None, description="1-200, default 50"),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page (opaque: any other value"
                                                 " is answered 400 validation_failed)"),
) -> Response:
    return json_response(await service.list_deliveries(repo, user_id, channel_id, limit=limit, cursor=cursor))


@router.post(CHANNEL + "/test", response_model=TestResult, responses=errors(404))
async def test_channel(channel_id: str, request: Request, user_id: UserId) -> Response:
    """Sends a test alert to the channel now (one attempt, at most 10 s) and answers with the
    outcome; it is not recorded in the deliveries. A disabled channel can be tested."""
    async with read_only_unit(request) as repo:
        found_id, target = await service.channel_target(repo, user_id, channel_id)
    settings = request.app.state.settings
    send_settings = SendSettings(allow_private=settings.allow_private_targets, smtp_url=settings.smtp_url,
                                 mail_from=settings.mail_from)
    return json_response(await service.send_test(target, user_id, found_id, send_settings))
