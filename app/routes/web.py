"""What every dashboard page shares: templates, the signed-in user, CSRF, the page's headers, assets.

Pages are server-rendered (one template each, partials for what refreshes) and work with
JavaScript off for reading and for the officers' buttons; a few lines of script (static/kengele.js)
refresh the lists and draw the map. Every asset is served from the package, versioned by its
content so a browser keeps it for a year and a page's later loads fetch only the page.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.types import Scope

from app.auth import RANK, Principal, session_principal
from app.crypto import CryptoError
from app.enums import ApiRole
from app.i18n import languages, translator
from gateways.base import secrets_equal

STATIC_URL = "/static"
LOGIN_CSRF_COOKIE = "kengele_login_csrf"
# Assets carry ?v=<hash of their content>: cached for a year, fetched again only when they change.
ASSET_CACHE = "public, max-age=31536000, immutable"

ENV = Environment(
    loader=PackageLoader("app", "templates"),
    autoescape=select_autoescape(("html",), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


class SignInNeeded(Exception):
    """A page asked for without a live session: answered by a redirect to /login."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


@cache
def asset_version(name: str) -> str:
    data = (resources.files("app") / "static" / name).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def static_url(name: str) -> str:
    return f"{STATIC_URL}/{name}?v={asset_version(name)}"


class Assets(StaticFiles):
    """The package's static files, cacheable for a year (their URLs change when they do)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["cache-control"] = ASSET_CACHE
        return response


def assets() -> Assets:
    return Assets(packages=[("app", "static")])


def tile_origin(url: str) -> str:
    """The origin the map's tiles come from (for the page's CSP), "" for none."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else ""


def policy(tiles: str) -> str:
    """The pages' Content-Security-Policy: nothing inline, nothing from elsewhere but the map's tiles."""
    origin = tile_origin(tiles)
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data: {origin}".rstrip(),
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


def viewer_or_login(request: Request) -> Principal:
    """The signed-in user of a page, or a redirect to /login that comes back here."""
    principal = session_principal(request)
    if principal is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInNeeded(target)
    return principal


def page_role(role: ApiRole) -> Callable[[Principal], Principal]:
    """A page dependency: signed in with `role` or above (403 page otherwise)."""

    def dependency(principal: Annotated[Principal, Depends(viewer_or_login)]) -> Principal:
        if not principal.at_least(role):
            raise HTTPException(403, f"role {role} required")
        return principal

    return dependency


ViewerPage = Annotated[Principal, Depends(page_role(ApiRole.VIEWER))]
OfficerPage = Annotated[Principal, Depends(page_role(ApiRole.OFFICER))]
AdminPage = Annotated[Principal, Depends(page_role(ApiRole.ADMIN))]


def check_form_csrf(principal: Principal, given: object) -> None:
    """403 unless a dashboard form carries its session's CSRF token."""
    if not isinstance(given, str) or principal.csrf is None or not secrets_equal(given, principal.csrf):
        raise HTTPException(403, "csrf_token: missing or wrong (reload the page and try again)")


# A search for a phone number (or a name) travels in the page's URL sealed, never as typed: URLs are
# kept in browser history and in every proxy's access log. The form posts it; the answer is a
# redirect to the list with `who=` sealed under the newest key, for this use only.
SEARCH_CONTEXT = b"kengele:dashboard-search"


def seal_search(request: Request, text: str) -> str:
    return str(request.app.state.runtime.keyring.encrypt(text, context=SEARCH_CONTEXT))


def searched(request: Request, path: str, text: str, **filters: str) -> RedirectResponse:
    """The list at `path` showing a search for `text` (sealed into `who`) and `filters`."""
    query = {"who": seal_search(request, text) if text.strip() else "", **filters}
    return RedirectResponse(f"{path}?" + urlencode({k: v for k, v in query.items() if v}), status_code=303)


def open_search(request: Request, token: str) -> str:
    """The search a `who=` holds; 422 when it was altered or sealed under a key no longer configured."""
    if not token:
        return ""
    try:
        return str(request.app.state.runtime.keyring.decrypt(token, context=SEARCH_CONTEXT))
    except CryptoError:
        raise HTTPException(422, "who: this search link does not open (search again)") from None


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (never //elsewhere or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_redirect(next_url: str) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(next_url, safe='/')}", status_code=303)


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def secure_cookies(request: Request) -> bool:
    """Cookies are Secure when the site is reached over https (directly or behind a TLS proxy)."""
    public = request.app.state.runtime.settings.public_url
    return request.url.scheme == "https" or public.startswith("https://")


def render(
    request: Request,
    template: str,
    principal: Principal | None,
    *,
    status: int = 200,
    title: str = "",
    **context: Any,
) -> HTMLResponse:
    """Render one page (or partial) for `principal` in their language, with the pages' headers."""
    settings = request.app.state.runtime.settings
    language = principal.language if principal else _browser_language(request)
    html = ENV.get_template(template).render(
        request=request,
        user=principal,
        t=translator(language),
        language=language,
        languages=languages(),
        static=static_url,
        csrf=principal.csrf if principal else "",
        can=lambda role: principal is not None and RANK[principal.role] >= RANK[role],
        title=title,
        map_tiles=settings.map_tiles,
        map_attribution=settings.map_attribution,
        path=request.url.path,
        query_for=lambda page: urlencode({**request.query_params, "page": page}),
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    response.headers["content-security-policy"] = policy(settings.map_tiles)
    response.headers["referrer-policy"] = "same-origin"
    response.headers["x-frame-options"] = "DENY"
    response.headers["vary"] = "Cookie"
    return response


def _browser_language(request: Request) -> str:
    """The sign-in page's language: the first of the browser's that the dashboard has."""
    known = languages()
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in known:
            return code
    return request.app.state.runtime.settings.default_language if request.app else "en"


# Paths that answer JSON (or a provider, or a scraper): everything else is a page of the dashboard.
_NOT_PAGES = (
    "/api/",
    "/webhooks/",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/metrics",
    "/healthz",
    "/readyz",
    STATIC_URL,
)


def is_page(request: Request) -> bool:
    """Whether a refusal should be a page (a person at a browser) rather than JSON."""
    return not request.url.path.startswith(_NOT_PAGES)


def error_page(request: Request, status: int, detail: str) -> HTMLResponse:
    """A refusal as a page: what was refused and why, and the way back."""
    try:
        principal = session_principal(request)
    except Exception:  # the database is away: the page is shown all the same, signed out
        principal = None
    return render(request, "error.html", principal, status=status, title="Error", detail=detail)
