"""JSON responses rendered with orjson (the API's one serializer), errors included."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

if TYPE_CHECKING:  # type only: errors.py imports nothing of the rendering
    from procwatch_api.errors import ApiError

# Naive datetimes are UTC and end in "Z": the form service.json_time hands timestamps over in.
JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data, option=JSON_OPTIONS), status_code=status, headers=headers,
                    media_type="application/json")


def error_response(exc: ApiError) -> Response:
    """The one rendering of an error: `{"error": code, "message": text, ...}` with its status and headers."""
    return json_response(exc.body(), status=exc.status, headers=exc.headers)
