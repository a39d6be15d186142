"""The review console and its JSON API.

Pages: ``/`` (incidents, filtered and paged, with figures per service), ``/incidents/ID``
(first, the other service where the cause lies, when a diagnosis names one; then the
timeline, both diagnoses side by side, the fixes, resolving by hand), ``/fixes`` and
``/fixes/ID`` (the diagnosis, what verification did, the diff, approve and reject).
They are rendered here, work without JavaScript, and load nothing from another
origin. The JSON API under ``/api/`` returns the documents the CLI's
``--json`` prints (agent/present.py) and makes the same decisions (agent/review.py).

Who may do what is agent/web/auth.py's: the API wants ``Authorization: Bearer``;
pages want a session (or the same header); every form posted with a session carries
its CSRF token.

Everything shown that came from containers or models is escaped as HTML by Jinja's
autoescape, and first passed through ``safe_text``, so terminal escapes and bidi
controls show as visible escapes rather than acting (``_finalize``).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
import markupsafe
from loguru import logger
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from agent import present
from agent.clock import SYSTEM_CLOCK, Clock
from agent.codec import format_duration
from agent.errors import FixError, FixNotFound, StoreError
from agent.escalate.document import edits_diff
from agent.fixes.document import healing_sentence, verification_summary
from agent.fixes.errors import FixRefused
from agent.model import ACTIVE_STATUSES, Diagnosis, Fix, FixStatus, Incident
from agent.output import json_default, safe_text
from agent.review import (
    DecisionRefused,
    Reviewer,
    approval_text,
    rejection_text,
    resolved_text,
)
from agent.store import IncidentQuery, IncidentStore
from agent.store.base import IncidentNotFound
from agent.web.auth import SESSION_COOKIE, SIGN_IN_COOKIE, Gate, Session, SignInLimiter

HERE = Path(__file__).parent

#: The time windows the incidents page offers.
WINDOWS: Mapping[str, timedelta | None] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "all": None,
}

#: The most incidents one listing reads: figures over a longer window say they were cut.
LISTING_CAP = 10_000

#: Bodies larger than this are refused: a decision is a name and a sentence or two.
MAX_BODY = 64 * 1024

#: How often an open incidents page refreshes its table, in seconds.
REFRESH_SECONDS = 10

#: A rebuild after an approval, started in the background: it logs how it went.
Rebuild = Callable[[Incident], None]

#: A fix's diff from git, or the proposed edits' diff when git cannot say.
DiffOf = Callable[[Fix, Diagnosis | None], str | None]


class BadRequest(Exception):
    """A request this console cannot read: 400, with the reason."""


def _finalize(value: object) -> object:
    """Every ``{{ }}`` in a template: text with controls and bidi characters made
    visible (autoescape then makes it inert HTML)."""
    if value is None:
        return ""
    if isinstance(value, markupsafe.Markup):
        return value  # a macro's output: already escaped
    if isinstance(value, str):
        return safe_text(value)
    return value


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    return "-" if value is None else format_duration(value)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["seconds"] = _seconds
    env.filters["short"] = lambda value: (value or "")[:8]
    env.filters["verification"] = verification_summary
    env.filters["healing"] = healing_sentence
    return env


@dataclass(frozen=True)
class Access:
    """Who is asking: a browser session, or a script with the bearer token."""

    session: Session | None

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session is not None else ""


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        # Browsers drop tabs and newlines from URLs: "/\t/evil.example" is "//evil.example".
        or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    ):
        return "/"
    return target


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


class Console:
    """The console's pages and API over one store and one reviewer."""

    def __init__(
        self,
        *,
        store: IncidentStore,
        reviewer: Reviewer,
        token: str,
        diff_of: DiffOf,
        rebuild: Rebuild | None = None,
        clock: Clock = SYSTEM_CLOCK,
        page_size: int = 50,
        limiter: SignInLimiter | None = None,
    ) -> None:
        self.store = store
        self.reviewer = reviewer
        self.gate = Gate(token)
        self.limiter = limiter or SignInLimiter()
        self.diff_of = diff_of
        self.rebuild = rebuild
        self.clock = clock
        self.page_size = page_size
        self.env = templates()
        self._flashes: dict[str, str] = {}
        self._flash_lock = threading.Lock()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.incidents_page),
            Route("/fragments/incidents", self.incidents_fragment),
            Route("/incidents/{id}", self.incident_page),
            Route("/incidents/{id}/resolve", self.resolve_form, methods=["POST"]),
            Route("/fixes", self.fixes_page),
            Route("/fixes/{id}", self.fix_page),
            Route("/fixes/{id}/approve", self.approve_form, methods=["POST"]),
            Route("/fixes/{id}/reject", self.reject_form, methods=["POST"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/api/incidents", self.api_incidents),
            Route("/api/incidents/{id}", self.api_incident),
            Route("/api/incidents/{id}/resolve", self.api_resolve, methods=["POST"]),
            Route("/api/fixes", self.api_fixes),
            Route("/api/fixes/{id}", self.api_fix),
            Route("/api/fixes/{id}/approve", self.api_approve, methods=["POST"]),
            Route("/api/fixes/{id}/reject", self.api_reject, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    # --- rendering ---------------------------------------------------------------------

    def html(
        self, name: str, context: Mapping[str, Any], *, status: int = 200, access: Access | None
    ) -> HTMLResponse:
        template = self.env.get_template(name)
        body = template.render(
            **{"done": "", "section": "", **context},
            csrf=access.csrf if access is not None else "",
            signed_in=access is not None,
            refresh_seconds=REFRESH_SECONDS,
        )
        return HTMLResponse(body, status_code=status)

    async def error_page(self, request: Request, status: int, message: str = "") -> Response:
        access = self._access(request)
        if not message:
            message = {404: "There is nothing here.", 405: "That cannot be done here."}.get(
                status, "Something went wrong."
            )
        return self.html(
            "error.html", {"status": status, "message": message}, status=status, access=access
        )

    # --- who is asking -------------------------------------------------------------------

    def _access(self, request: Request) -> Access | None:
        if self.gate.bearer_ok(request.headers.get("authorization")):
            return Access(session=None)
        session = self.gate.session(request.cookies.get(SESSION_COOKIE))
        return Access(session=session) if session is not None else None

    def _to_sign_in(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)

    async def _form(
        self, request: Request
    ) -> tuple[Access | None, Mapping[str, str], Response | None]:
        """The posted form of a page, and who posted it; a response instead when the
        poster is not signed in or the form's CSRF token is missing or wrong."""
        access = self._access(request)
        if access is None:
            return None, {}, self._to_sign_in(request)
        fields = await self._fields(request)
        if fields is None:
            return access, {}, self._too_long()
        if access.session is not None and not secrets.compare_digest(
            fields.get("csrf", "").encode(), access.session.csrf.encode()
        ):
            logger.warning(
                "Refused a console form posted to {} without its CSRF token (from {}).",
                request.url.path,
                _client(request),
            )
            response = await self.error_page(
                request,
                403,
                "This form did not come from this page of the console, so it was refused and "
                "nothing changed. Reload the page and try again.",
            )
            return access, fields, response
        return access, fields, None

    @staticmethod
    async def _read(request: Request) -> bytes | None:
        """The request's body, or None when it is longer than MAX_BODY (whether it says
        so in Content-Length or comes in chunks): a decision is a name and a sentence."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _fields(self, request: Request) -> dict[str, str] | None:
        """A posted form's fields (the first value of each), or None when too long."""
        body = await self._read(request)
        if body is None:
            return None
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {name: values[0] for name, values in parsed.items()}

    @staticmethod
    def _too_long() -> Response:
        return JSONResponse({"error": f"the body is longer than {MAX_BODY} bytes"}, 413)

    # --- signing in ----------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self._login_form(request, status=200, message="")

    def _login_form(self, request: Request, *, status: int, message: str) -> Response:
        nonce = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(24)
        response = self.html(
            "login.html",
            {
                "next": _safe_next(request.query_params.get("next")),
                "login_csrf": self.gate.sign_in_csrf(nonce),
                "message": message,
            },
            status=status,
            access=None,
        )
        self._cookie(request, response, SIGN_IN_COOKIE, nonce, max_age=3600)
        return response

    async def login(self, request: Request) -> Response:
        client = _client(request)
        wait = self.limiter.retry_after(client)
        if wait is not None:
            response = self._login_form(
                request,
                status=429,
                message=f"Too many failed sign-ins. Try again in {format_duration(wait)}.",
            )
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        form = await self._fields(request)
        if form is None:
            return self._too_long()
        token = form.get("token")
        target = _safe_next(form.get("next") or "/")
        if not self.gate.sign_in_csrf_ok(request.cookies.get(SIGN_IN_COOKIE), form.get("csrf")):
            return self._login_form(
                request,
                status=403,
                message="The sign-in form had expired. It is fresh now: sign in again.",
            )
        if not self.gate.token_ok(token):
            self.limiter.failed(client)
            logger.warning("A console sign-in from {} gave a wrong token.", client)
            return self._login_form(request, status=401, message="That token is not right.")
        self.limiter.succeeded(client)
        session = self.gate.open_session()
        response = RedirectResponse(target, status_code=303)
        self._cookie(request, response, SESSION_COOKIE, session.id, max_age=int(self.gate.lifetime))
        response.delete_cookie(SIGN_IN_COOKIE, path="/")
        logger.info("Someone signed in to the console from {}.", client)
        return response

    async def logout(self, request: Request) -> Response:
        access, _, refused = await self._form(request)
        if refused is not None:
            return refused
        if access is not None and access.session is not None:
            self.gate.close_session(access.session.id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @staticmethod
    def _cookie(
        request: Request, response: Response, name: str, value: str, *, max_age: int
    ) -> None:
        secure = request.url.scheme == "https" or (
            request.headers.get("x-forwarded-proto", "").lower() == "https"
        )
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure,
        )

    # --- incidents -----------------------------------------------------------------------

    def _listing(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The incidents page's data for its query parameters (blocking: the store)."""
        now = self.clock.now()
        window = params.get("since") or "7d"
        if window not in WINDOWS:
            raise BadRequest(f"since {window!r} is not one of {', '.join(WINDOWS)}")
        status = params.get("status") or "all"
        statuses = present.parse_statuses(status)
        service = params.get("service") or None
        try:
            number = int(params.get("page") or "1")
        except ValueError:
            raise BadRequest("page must be a number") from None
        span = WINDOWS[window]
        since = now - span if span is not None else None
        incidents = self.store.list_incidents(
            IncidentQuery(since=since, service=service, limit=LISTING_CAP)
        )
        figures = present.service_figures(incidents)
        chosen = [i for i in incidents if i.status in statuses]
        page = present.page_of(chosen, number=number, size=self.page_size)
        marks = self.store.review_marks([i.id for i in page.items])
        services = sorted({f.service for f in figures} | ({service} if service else set()))
        filters = {
            "status": present.status_word(statuses),
            "service": service or "",
            "since": window,
        }
        return {
            "section": "incidents",
            "now": now,
            "page": page,
            "durations": {i.id: present.duration_text(i, now=now) for i in page.items},
            "last_actions": {i.id: present.last_action_text(i) for i in page.items},
            "marks": marks,
            "figures": figures,
            "cut": len(incidents) >= LISTING_CAP,
            "filters": filters,
            "services": services,
            "windows": list(WINDOWS),
            "statuses": list(present.STATUS_WORDS),
            "query": lambda **change: urlencode(
                {k: v for k, v in {**filters, **change}.items() if v}
            ),
        }

    async def incidents_page(self, request: Request) -> Response:
        access = self._access(request)
        if access is None:
            return self._to_sign_in(request)
        return await self._page(
            request, access, "incidents.html", self._listing, dict(request.query_params)
        )

    async def incidents_fragment(self, request: Request) -> Response:
        access = self._access(request)
        if access is None:
            return JSONResponse({"error": "sign in again"}, 401)
        return await self._page(
            request, access, "incidents_live.html", self._listing, dict(request.query_params)
        )

    def _incident(self, incident_id: str) -> dict[str, Any]:
        incident = self.store.get(incident_id)
        diagnoses = self.store.diagnoses(incident.id)
        fixes = self.store.fixes_of_incident(incident.id)
        notifications = self.store.notifications(incident.id)
        now = self.clock.now()
        pair = present.diagnosis_pair(diagnoses)
        return {
            "section": "incidents",
            "now": now,
            "incident": incident,
            "cause": present.cause_of(pair),
            "duration": present.duration_text(incident, now=now),
            "scope": present.scope_cell(incident.scope),
            "moments": present.timeline(
                incident, diagnoses=diagnoses, fixes=fixes, notifications=notifications
            ),
            "pair": pair,
            "quotes": present.evidence_quotes,
            "fixes": fixes,
            "diff_lines": present.diff_lines,
            "edits_diff": _edits_diff,
            "active": incident.is_active,
        }

    async def incident_page(self, request: Request) -> Response:
        access = self._access(request)
        if access is None:
            return self._to_sign_in(request)
        return await self._page(
            request, access, "incident.html", self._incident, request.path_params["id"]
        )

    async def resolve_form(self, request: Request) -> Response:
        def work(ref: str, by: str, fields: Mapping[str, str]) -> tuple[str, str]:
            incident = self.reviewer.resolve(ref, by=by, note=fields.get("note", ""))
            logger.info("{} resolved incident {} in the console.", by, incident.id[:8])
            return f"/incidents/{incident.id}", resolved_text(incident)

        return await self._decide(request, "/incidents/{}", work)

    async def _decide(
        self,
        request: Request,
        back: str,
        work: Callable[[str, str, Mapping[str, str]], tuple[str, str]],
    ) -> Response:
        """A decision posted from a page: who (a name is needed), then ``work`` in the
        thread pool, which gives where to go and what to say there. A refusal shows its
        one line and changes nothing."""
        access, fields, refused = await self._form(request)
        if refused is not None:
            return refused
        ref = request.path_params["id"]
        here = back.format(ref)
        by = fields.get("by", "").strip()
        if not by:
            return self._refused(access, "Say who you are: a name is needed.", back=here)
        try:
            target, message = await run_in_threadpool(work, ref, by, fields)
        except (FixError, DecisionRefused, IncidentNotFound) as e:
            return self._refused(access, _sentence(e), back=here)
        self._flash(access, message)
        return RedirectResponse(target, status_code=303)

    def _flash(self, access: Access | None, message: str) -> None:
        """Say ``message`` on the next page this session opens."""
        if access is not None and access.session is not None:
            with self._flash_lock:
                self._flashes[access.session.id] = message
                while len(self._flashes) > 1000:
                    self._flashes.pop(next(iter(self._flashes)))

    def _flashed(self, access: Access) -> str:
        if access.session is None:
            return ""
        with self._flash_lock:
            return self._flashes.pop(access.session.id, "")

    # --- fixes ---------------------------------------------------------------------------

    def _fixes(self, everything: bool) -> dict[str, Any]:
        return {
            "section": "fixes",
            "fixes": self.store.list_fixes(include_decided=everything),
            "everything": everything,
        }

    async def fixes_page(self, request: Request) -> Response:
        access = self._access(request)
        if access is None:
            return self._to_sign_in(request)
        everything = request.query_params.get("all") in ("1", "true", "yes")
        return await self._page(request, access, "fixes.html", self._fixes, everything)

    def _fix(self, ref: str) -> dict[str, Any]:
        fix = self.store.get_fix(ref)
        diagnosis = next(
            (d for d in self.store.diagnoses(fix.incident_id) if d.id == fix.diagnosis_id), None
        )
        try:
            incident: Incident | None = self.store.get(fix.incident_id)
        except IncidentNotFound:
            incident = None
        diff = self.diff_of(fix, diagnosis)
        return {
            "section": "fixes",
            "fix": fix,
            "incident": incident,
            "diagnosis": diagnosis,
            "quotes": present.evidence_quotes,
            "lines": present.diff_lines(diff) if diff else [],
            "awaiting": fix.status is FixStatus.PROPOSED,
            "can_rebuild": self.rebuild is not None,
        }

    async def fix_page(self, request: Request) -> Response:
        access = self._access(request)
        if access is None:
            return self._to_sign_in(request)
        return await self._page(request, access, "fix.html", self._fix, request.path_params["id"])

    async def approve_form(self, request: Request) -> Response:
        def work(ref: str, by: str, fields: Mapping[str, str]) -> tuple[str, str]:
            return f"/fixes/{ref}", self._approve(ref, by, fields.get("rebuild") == "yes")

        return await self._decide(request, "/fixes/{}", work)

    async def reject_form(self, request: Request) -> Response:
        def work(ref: str, by: str, fields: Mapping[str, str]) -> tuple[str, str]:
            fix = self._reject(ref, by, fields.get("reason", ""))
            return f"/fixes/{fix.id}", rejection_text(fix)

        return await self._decide(request, "/fixes/{}", work)

    def _approve(self, ref: str, by: str, rebuild: bool) -> str:
        approval = self.reviewer.approve(ref, by=by)
        message = approval_text(approval)
        logger.info("{} approved fix {} in the console.", by, approval.fix.id[:8])
        if rebuild:
            if self.rebuild is None:
                message += " No rebuild: this medic has no Docker engine to rebuild with."
            else:
                incident = self.store.get(approval.fix.incident_id)
                self.rebuild(incident)
                message += (
                    f" Rebuilding {incident.container.service or incident.container.name} now; "
                    "medic's log says how it went."
                )
        return message

    def _reject(self, ref: str, by: str, reason: str) -> Fix:
        fix = self.reviewer.reject(ref, by=by, reason=reason)
        logger.info("{} rejected fix {} in the console.", by, fix.id[:8])
        return fix

    # --- pages: the common part ----------------------------------------------------------

    async def _page(
        self,
        request: Request,
        access: Access,
        template: str,
        load: Callable[[Any], dict[str, Any]],
        argument: Any,
    ) -> Response:
        try:
            context = await run_in_threadpool(load, argument)
        except (IncidentNotFound, FixNotFound) as e:
            return await self.error_page(request, 404, _sentence(e))
        except (BadRequest, present.QueryError) as e:
            return await self.error_page(request, 400, _sentence(e))
        except StoreError as e:
            return await self.error_page(
                request, 503, f"The incident database does not answer: {_sentence(e)}"
            )
        context["done"] = self._flashed(access)
        return self.html(template, context, access=access)

    def _refused(self, access: Access | None, message: str, *, back: str) -> Response:
        return self.html(
            "refused.html", {"message": message, "back": back}, status=409, access=access
        )

    # --- the JSON API --------------------------------------------------------------------

    def _api_access(self, request: Request) -> Response | None:
        if self.gate.bearer_ok(request.headers.get("authorization")):
            return None
        return JSONResponse(
            {"error": "send the console's token: Authorization: Bearer <MEDIC_UI_TOKEN>"},
            401,
            headers={"WWW-Authenticate": 'Bearer realm="medic"'},
        )

    async def _api(
        self, request: Request, work: Callable[[], object], status: int = 200
    ) -> Response:
        denied = self._api_access(request)
        if denied is not None:
            return denied
        try:
            document = await run_in_threadpool(work)
        except (IncidentNotFound, FixNotFound) as e:
            return JSONResponse({"error": _sentence(e)}, 404)
        except (BadRequest, present.QueryError) as e:
            return JSONResponse({"error": _sentence(e)}, 400)
        except (FixRefused, DecisionRefused, FixError) as e:
            return JSONResponse({"error": _sentence(e)}, 409)
        except StoreError as e:
            return JSONResponse(
                {"error": f"the incident database does not answer: {_sentence(e)}"}, 503
            )
        return Response(
            json.dumps(document, default=json_default).encode(),
            status_code=status,
            media_type="application/json",
        )

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await self._read(request)
        if raw is None:
            raise BadRequest(f"the body is longer than {MAX_BODY} bytes")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise BadRequest("the body is not JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    async def _decision(
        self, request: Request, work: Callable[[dict[str, Any]], object]
    ) -> Response:
        denied = self._api_access(request)
        if denied is not None:
            return denied
        try:
            body = await self._body(request)
        except BadRequest as e:
            return JSONResponse({"error": _sentence(e)}, 400)
        return await self._api(request, lambda: work(body))

    async def api_incidents(self, request: Request) -> Response:
        params = request.query_params

        def work() -> object:
            statuses = present.parse_statuses(params.get("status"))
            since = present.parse_since(params.get("since"), now=self.clock.now())
            incidents = self.store.list_incidents(
                IncidentQuery(
                    since=since,
                    service=params.get("service") or None,
                    # Active ones only, the default: the store need not read the rest.
                    active_only=statuses <= ACTIVE_STATUSES,
                )
            )
            chosen = [i for i in incidents if i.status in statuses]
            marks = self.store.review_marks([i.id for i in chosen])
            return present.incident_list(chosen, now=self.clock.now(), marks=marks)

        return await self._api(request, work)

    async def api_incident(self, request: Request) -> Response:
        ref = request.path_params["id"]

        def work() -> object:
            incident = self.store.get(ref)
            diagnoses = self.store.diagnoses(incident.id)
            by_id = {d.id: d for d in diagnoses}
            return present.incident_detail(
                incident,
                diagnoses=diagnoses,
                fixes=self.store.fixes_of_incident(incident.id),
                notifications=self.store.notifications(incident.id),
                diff_of=lambda fix: self.diff_of(fix, by_id.get(fix.diagnosis_id)),
                now=self.clock.now(),
            )

        return await self._api(request, work)

    async def api_fixes(self, request: Request) -> Response:
        everything = request.query_params.get("all") in ("1", "true", "yes")
        return await self._api(
            request, lambda: present.fix_list(self.store.list_fixes(include_decided=everything))
        )

    async def api_fix(self, request: Request) -> Response:
        ref = request.path_params["id"]

        def work() -> object:
            fix = self.store.get_fix(ref)
            diagnosis = next(
                (d for d in self.store.diagnoses(fix.incident_id) if d.id == fix.diagnosis_id),
                None,
            )
            return present.fix_detail(fix, diagnosis=diagnosis, diff=self.diff_of(fix, diagnosis))

        return await self._api(request, work)

    async def api_approve(self, request: Request) -> Response:
        ref = request.path_params["id"]

        def work(body: dict[str, Any]) -> object:
            by = _name(body)
            rebuild = body.get("rebuild", False)
            if not isinstance(rebuild, bool):
                raise BadRequest("rebuild must be true or false")
            message = self._approve(ref, by, rebuild)
            fix = self.store.get_fix(ref)
            return {"fix": present.fix_list([fix])[0], "message": message}

        return await self._decision(request, work)

    async def api_reject(self, request: Request) -> Response:
        ref = request.path_params["id"]

        def work(body: dict[str, Any]) -> object:
            by = _name(body)
            reason = body.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                raise BadRequest("say why the fix is rejected: reason is needed")
            fix = self._reject(ref, by, reason)
            return {"fix": present.fix_list([fix])[0], "message": rejection_text(fix)}

        return await self._decision(request, work)

    async def api_resolve(self, request: Request) -> Response:
        ref = request.path_params["id"]

        def work(body: dict[str, Any]) -> object:
            by = _name(body)
            note = body.get("note")
            if not isinstance(note, str) or not note.strip():
                raise BadRequest("say what was done, for the record: note is needed")
            incident = self.reviewer.resolve(ref, by=by, note=note)
            return {
                "incident": present.incident_document(incident, now=self.clock.now()),
                "message": resolved_text(incident),
            }

        return await self._decision(request, work)


def _name(body: Mapping[str, Any]) -> str:
    by = body.get("by")
    if not isinstance(by, str) or not by.strip():
        raise BadRequest("say who decides: by is needed")
    if len(by) > 200:
        raise BadRequest("by is longer than 200 characters")
    return by.strip()


def _sentence(error: BaseException) -> str:
    text = str(error).strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _edits_diff(diagnosis: Diagnosis) -> list[present.DiffLine]:
    return present.diff_lines(edits_diff(diagnosis.edits)) if diagnosis.edits else []


def console_off_routes() -> list[BaseRoute]:
    """Without MEDIC_UI_TOKEN the console's paths say how to turn it on."""

    def off(request: Request) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse(
                {"error": "the console and its API are off; set MEDIC_UI_TOKEN to turn them on"},
                404,
            )
        return HTMLResponse(
            "<!doctype html><title>medic</title><p>The review console is off. Set "
            "MEDIC_UI_TOKEN to a long random secret and restart medic to turn it on.</p>",
            status_code=404,
        )

    return [
        Route("/", off, methods=["GET", "POST"]),
        Route("/login", off, methods=["GET", "POST"]),
        Route("/api/{rest:path}", off, methods=["GET", "POST"]),
    ]
