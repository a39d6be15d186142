"""The ASGI application ``medic run`` serves: the health endpoints, and the review
console with its JSON API when MEDIC_UI_TOKEN is set.

/healthz says whether the loop is alive (the last poll finished within three
intervals) and whether the events stream is connected; a Docker HEALTHCHECK or an
orchestrator restarts medic when it is not. /readyz says whether incidents are being
recorded: the database answers, or the local spool is taking the writes; and whether
this medic leads its scope or stands by (a standby is ready: it serves its pages).
/metrics is Prometheus text. /status is what ``medic status`` shows: this medic's
role and every supervised container. These four need no token, as
before the console existed, and never touch Docker or the database.

Every answer carries headers that keep a browser from framing, sniffing or caching
what it shows (``SecurityHeaders``); console pages add a Content-Security-Policy that
allows no inline script and nothing from another origin.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.web.console import Console, console_off_routes

Check = Callable[[], tuple[bool, dict[str, object]]]

#: Scripts only from medic itself, no inline script or style, no plug-ins, no framing,
#: forms only back to medic.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class SecurityHeaders:
    """Adds the headers every answer carries; ``no-store`` on all but static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
                headers.setdefault(
                    "Cache-Control", "private, max-age=3600" if static else "no-store"
                )
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _json(document: object, status: int = 200) -> Response:
    body = json.dumps(document, default=str).encode()
    return Response(body, status_code=status, media_type="application/json")


def health_routes(
    *,
    health: Check,
    ready: Check,
    registry: CollectorRegistry,
    status: Callable[[], Any] | None,
) -> list[BaseRoute]:
    """/healthz, /readyz, /metrics and (with ``status``, which makes its document) /status."""

    def check(which: Check) -> Response:
        try:
            ok, detail = which()
        except Exception as e:  # a failing check is an unhealthy answer, not a crash
            ok, detail = False, {"status": "error", "error": str(e)}
        return _json(detail, 200 if ok else 503)

    def healthz(request: Request) -> Response:
        return check(health)

    def readyz(request: Request) -> Response:
        return check(ready)

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]
    if status is not None:
        show = status

        def status_page(request: Request) -> Response:
            return _json(show())

        routes.append(Route("/status", status_page))
    return routes


def build_app(
    *,
    health: Check,
    ready: Check,
    registry: CollectorRegistry,
    status: Callable[[], Any] | None = None,
    console: Console | None = None,
) -> ASGIApp:
    """The whole application; without ``console`` the console's paths say it is off."""
    routes = health_routes(health=health, ready=ready, registry=registry, status=status)
    routes += console.routes() if console is not None else console_off_routes()

    async def not_found(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        if console is not None and not request.url.path.startswith("/api/"):
            return await console.error_page(request, code)
        return JSONResponse({"error": "not found" if code == 404 else "error"}, code)

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    return SecurityHeaders(app)
