"""How every dashboard page answers: the Jinja2 environment, the page response (headers that
keep it out of caches and frames), the redirect after a post, the inline messages of a failed form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from procwatch_api import service
from procwatch_api.errors import ApiError, ValidationFailed
from procwatch_api.web import pages
from procwatch_api.web.sessions import CSRF_FIELD

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["when"] = pages.when
templates.env.filters["num"] = service.num  # 50, not 50.0, as the JSON routes write it
# Whether the acknowledgement and maintenance pages are mounted (routes.install).
templates.env.globals["has_ack_and_windows"] = False
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
)


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    response = templates.TemplateResponse(request, name, {"csrf_field": CSRF_FIELD, **context}, status_code=status)
    # Pages show live data and carry CSRF tokens: never cached, never framed.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    # A one-time link's token never leaves in a Referer header.
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def redirect(url: str) -> RedirectResponse:
    """After a successful post: 303, so a reload of the next page does not post again."""
    return RedirectResponse(url, status_code=303)


def redirect_back(form: Any, default: str) -> RedirectResponse:
    """Back to the page the button was on (its `back` field), only ever a page of the dashboard."""
    back = str(form.get("back", ""))
    return redirect(back if back.startswith("/ui/") and not back.startswith("/ui//") else default)


def issues_of(exc: ApiError) -> dict[str, str]:
    """The messages of a refused form, by input name ("" for the form as a whole)."""
    if isinstance(exc, ValidationFailed):
        return pages.issues_by_field(exc.extra.get("issues", []))
    return {"": exc.message}
