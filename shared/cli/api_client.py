"""The commands' side of the HTTP APIs: where they are (``--url``, the local port by default), which
token to send (``--token``, else the read token for reads and the admin token for writes,
shared/http_auth.py), and every failure said in one line on stderr, exit 1, never a traceback: an
API that cannot be reached, a refusal, an answer that is not JSON (a proxy's error page)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer

if TYPE_CHECKING:
    import httpx

    from shared.settings import Settings

READ_TOKEN_VARIABLE = "FISCALFLOW_READ_TOKEN"
ADMIN_TOKEN_VARIABLE = "FISCALFLOW_API_TOKEN"
CLI_TOKEN_VARIABLE = "FISCALFLOW_CLI_TOKEN"
URL_VARIABLES = {"ingest": "FISCALFLOW_INGEST_URL", "report": "FISCALFLOW_REPORT_URL"}
SHOWN_CHARS = 200  # of a body that is not JSON

Service = Literal["ingest", "report"]


def _url_option(service: Service) -> Any:
    return typer.Option("--url", envvar=URL_VARIABLES[service], show_default=False,
                        help=f"Base URL of the {service} API, e.g. https://{service}.example.com "
                             f"(default: http://127.0.0.1:FISCALFLOW_{service.upper()}_PORT).")


IngestUrl = Annotated[str | None, _url_option("ingest")]
ReportUrl = Annotated[str | None, _url_option("report")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar=CLI_TOKEN_VARIABLE, show_default=False,
    help="Bearer token to send (default: FISCALFLOW_READ_TOKEN for reads, FISCALFLOW_API_TOKEN for writes).")]


def bearer(settings: Settings, admin: bool = False) -> dict[str, str]:
    """The ``Authorization`` header of a read (the read token) or a write (the admin token)."""
    token = settings.api_token if admin else settings.read_token
    return {"Authorization": f"Bearer {token.get_secret_value()}"}


@dataclass(frozen=True)
class Api:
    """One API as a command reaches it: its base URL and the header its requests carry."""

    service: Service
    base: str
    headers: dict[str, str]
    admin: bool = False
    token_given: bool = False  # --token / FISCALFLOW_CLI_TOKEN rather than the settings' token

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


def api(service: Service, url: str | None = None, token: str | None = None, admin: bool = False) -> Api:
    """``service``'s API at ``url`` (default: the local port) with ``token`` (default: the settings')."""
    if url and token:
        return Api(service, url.rstrip("/"), {"Authorization": f"Bearer {token}"}, admin, True)
    from shared.settings import Settings

    settings = Settings()
    base = (url or f"http://127.0.0.1:{getattr(settings, f'{service}_port')}").rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else bearer(settings, admin)
    return Api(service, base, headers, admin, bool(token))


def one_line(text: str, limit: int | None = None) -> str:
    text = " ".join(text.split())
    return text if limit is None or len(text) <= limit else text[:limit] + "…"


def refusal(status: int, body: Any, admin: bool = False, token_given: bool = False) -> str:
    """One line for an API's refusal (``body``: its JSON, or its text)."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    detail = one_line(detail if isinstance(detail, str) else json.dumps(detail))
    variable = ADMIN_TOKEN_VARIABLE if admin else READ_TOKEN_VARIABLE
    if status == 401:
        kind = "admin" if admin else "read"
        if token_given:
            return (f"HTTP 401: the API refused the token given by --token ({CLI_TOKEN_VARIABLE}); give the "
                    f"deployment's {kind} token")
        return (f"HTTP 401: the API refused the {kind} token; set {variable} (or {variable}_FILE) to the {kind} "
                f"token the services were given, or pass --token")
    if status == 403:
        return f"HTTP 403: {detail} ({CLI_TOKEN_VARIABLE if token_given else ADMIN_TOKEN_VARIABLE})"
    return f"HTTP {status}: {detail}"


def die(message: str) -> NoReturn:
    """Say ``message`` on stderr and exit 1."""
    typer.echo(message, err=True)
    raise typer.Exit(1)


def fail(status: int, body: Any, admin: bool = False, token_given: bool = False) -> NoReturn:
    """Say the refusal in one line on stderr and exit 1."""
    die(refusal(status, body, admin, token_given))


def body_of(resp: httpx.Response) -> Any:
    """An ``httpx.Response``'s JSON, or its text when it is not JSON (a proxy's error page)."""
    try:
        return resp.json()
    except ValueError:
        return resp.text.strip()[:500]


def unreachable(target: Api, url: str, exc: Exception) -> str:
    """One line for a request that got no answer (refused, no such host, timed out)."""
    reason = one_line(str(exc)) or type(exc).__name__
    return (f"{target.service} API at {url} unreachable ({type(exc).__name__}: {reason}); start it "
            f"(`fiscalflow service run {target.service}`) or point --url ({URL_VARIABLES[target.service]}) "
            "at the deployment")


def checked(target: Api, resp: httpx.Response, ok: tuple[int, ...] = (200,)) -> dict[str, Any]:
    """The JSON object of an answer whose status is in ``ok``; anything else exits 1 in one line."""
    try:
        body = resp.json()
    except ValueError:
        if resp.status_code in (401, 403):
            fail(resp.status_code, resp.reason_phrase, target.admin, target.token_given)
        die(f"HTTP {resp.status_code} from {resp.request.url}, not JSON "
            f"({resp.headers.get('content-type', 'no content-type')}): "
            f"{one_line(resp.text, SHOWN_CHARS) or '(empty body)'}")
    if resp.status_code not in ok:
        fail(resp.status_code, body, target.admin, target.token_given)
    if not isinstance(body, dict):
        die(f"HTTP {resp.status_code} from {resp.request.url}: expected a JSON object, got "
            f"{one_line(json.dumps(body), SHOWN_CHARS)}")
    return body


def call(target: Api, method: str, path: str, ok: tuple[int, ...] = (200,), client: httpx.Client | None = None,
         **kwargs: Any) -> dict[str, Any]:
    """Send one request (``kwargs``: httpx's) and return its JSON object; a failure exits 1 in one line."""
    import httpx

    url = target.url(path)
    try:
        if client is None:
            resp = httpx.request(method, url, headers=target.headers, **kwargs)
        else:
            resp = client.request(method, url, headers=target.headers, **kwargs)
    except httpx.TransportError as exc:
        die(unreachable(target, url, exc))
    return checked(target, resp, ok)
