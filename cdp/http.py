"""The HTTP kit every connector gets: one client with timeouts, retries and
clear errors, pagination helpers, and webhook signature checks.

* Retries (urllib3 ``Retry`` under requests): connection errors, timeouts,
  HTTP 429 and 5xx on idempotent methods, with exponential backoff; a
  ``Retry-After`` header is honoured, up to a bound, so one misbehaving
  server cannot stall a sync for hours.
* Errors: 401/403 → :class:`AuthError` naming the connector and what to
  check; still failing after the retries → :class:`SourceUnavailable`; a
  body that is not the JSON promised → :class:`MalformedResponse`.
* Nothing secret or personal in logs or exception text: messages carry the
  connector, the host, the path (long digit runs and e-mail-like segments
  masked) and the status, never query strings, headers or bodies; the
  configuration's secret values are masked wherever they could appear, and
  urllib3's own debug lines lose their query strings.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cdp.connectors import AuthError, ConnectorError, MalformedResponse, SourceUnavailable, redact

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 500, 502, 503, 504)
DEFAULT_TIMEOUT = (5.0, 60.0)  # (connect, read) seconds


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: `retries` after the first attempt, waits of
    backoff * 2**n seconds (at most `backoff_max`), Retry-After honoured up
    to `retry_after_max` seconds."""

    retries: int = 4
    backoff: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 120.0
    # Idempotent methods only; add "POST" where the API takes an idempotency key.
    methods: frozenset = Retry.DEFAULT_ALLOWED_METHODS

    def urllib3(self) -> Retry:
        return _bounded_retry(self.retry_after_max)(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            backoff_factor=self.backoff,
            backoff_max=self.backoff_max,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=self.methods,
            respect_retry_after_header=True,
            raise_on_status=False,  # the last answer comes back, and is turned into a clear error here
        )


# What a client uses unless given a policy (the contract kit swaps in a faster one).
DEFAULT_RETRY = RetryPolicy()


@lru_cache(maxsize=16)
def _bounded_retry(cap: float) -> type[Retry]:
    class BoundedRetry(Retry):
        def parse_retry_after(self, retry_after: str) -> float:
            return min(super().parse_retry_after(retry_after), cap)

    return BoundedRetry


# -- keeping secrets and personal data out of text ------------------------------------

_QUERY = re.compile(r"\?[^\s'\")]*")
# 8+ digits (CPF, phone), anything with @, and 32+ hex digits (hashes of identifiers, e.g. Mailchimp's
# subscriber_hash = MD5 of the e-mail).
_MASKABLE_SEGMENT = re.compile(r"^(\d{8,}|.*@.*|[0-9a-fA-F]{32,})$")


def safe_path(url: str) -> str:
    """The path of a URL without its query string, with segments that may
    be personal (8+ digits: CPF, phone; anything with @; long hex hashes) masked."""
    path = urlsplit(url).path or "/"
    return "/".join("***" if _MASKABLE_SEGMENT.match(seg) else seg for seg in path.split("/"))


# A path segment of a URL inside log text that safe_path would mask.
_SEGMENT_IN_TEXT = re.compile(r"(?<=/)(\d{8,}|[^/\s'\")?]*@[^/\s'\")?]*|[0-9a-fA-F]{32,})(?=[/\s'\")?]|$)")


class _DropQueryStrings(logging.Filter):
    """urllib3 logs full URLs at DEBUG (and Retry reprs hold them too); a
    query string can carry an identifier or a token, and a path segment can
    be one (the same segments safe_path masks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad record is not ours to break
            return True
        record.msg, record.args = _SEGMENT_IN_TEXT.sub("***", _QUERY.sub("?…", message)), None
        return True


for _name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager", "urllib3.response"):
    logging.getLogger(_name).addFilter(_DropQueryStrings())


# -- the client ---------------------------------------------------------------------------


class HttpClient:
    """A requests session bound to one connector and one base URL.

    ``client.get_json("/api/orders", params={...})`` returns parsed JSON or
    raises a ConnectorError subclass whose message is safe to show."""

    def __init__(self, name: str, base_url: str, *, headers: Mapping[str, str] | None = None, auth=None,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT, retry: RetryPolicy | None = None,
                 secrets: Iterable[str] = (), auth_hint: str = "check the credentials",
                 reauthorize: Callable[[], Mapping[str, str] | None] | None = None):
        from cdp import __version__

        self.name = name
        self.base_url = base_url.rstrip("/") + "/"
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConnectorError(f"{name}: base URL must be http(s)://host[/path]")
        self.host = parts.hostname or parts.netloc
        self.timeout = timeout
        self.retry = retry or DEFAULT_RETRY
        self.secrets = [s for s in secrets if s]
        self.auth_hint = auth_hint
        # Called on an HTTP 401 (an expired OAuth access token): returns the new auth headers
        # (or None: nothing to renew), and the request is sent once more with them.
        self.reauthorize = reauthorize
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=self.retry.urllib3())
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": f"cdp/{__version__} ({name})", "Accept": "application/json"})
        self.session.headers.update(headers or {})
        self.session.auth = auth

    def close(self) -> None:
        self.session.close()

    # -- requests --
    def url(self, path: str) -> str:
        """Absolute URL for a path, or a full URL on the same origin (a next
        link must not send our credentials to another host)."""
        if path.startswith(("http://", "https://")):
            mine, theirs = urlsplit(self.base_url), urlsplit(path)
            if (mine.scheme, mine.netloc) != (theirs.scheme, theirs.netloc):
                raise MalformedResponse(f"{self.name}: refusing to follow a link to another host ({theirs.hostname})")
            return path
        return urljoin(self.base_url, path.lstrip("/"))

    def request(self, method: str, path: str, *, params: Mapping | None = None, json: Any = None,
                data: Any = None, headers: Mapping[str, str] | None = None,
                allow: Iterable[int] = ()) -> requests.Response:
        """Send a request with retries. 2xx (and statuses in `allow`) come
        back; anything else raises AuthError, SourceUnavailable or ConnectorError."""
        response = self._send(method, path, params=params, json=json, data=data, headers=headers)
        if response.status_code == 401 and self.reauthorize is not None and 401 not in set(allow):
            renewed = self.reauthorize()
            if renewed:
                self.session.headers.update(renewed)
                response = self._send(method, path, params=params, json=json, data=data, headers=headers)
        return self._check(response, method, allow)

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        url = self.url(path)
        where = f"{method.upper()} {safe_path(url)}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError) as exc:
            reason = _reason(exc)
            log.warning("%s: %s failed after retries (%s)", self.name, where, reason)
            raise SourceUnavailable(
                f"{self.name}: cannot reach {self.host} ({reason}) after {self.retry.retries + 1} attempt(s); "
                "try again later") from None
        except requests.exceptions.RequestException as exc:
            raise ConnectorError(f"{self.name}: {where} failed ({type(exc).__name__})") from None
        return response

    def _check(self, response: requests.Response, method: str, allow: Iterable[int]) -> requests.Response:
        where = f"{method.upper()} {safe_path(response.url)}"
        status = response.status_code
        attempts = 1 + len(getattr(getattr(response.raw, "retries", None), "history", ()) or ())
        log.debug("%s: %s -> HTTP %s (attempts=%d)", self.name, where, status, attempts)
        if 200 <= status < 300 or status in set(allow):
            return response
        if status in (401, 403):
            raise AuthError(self._safe(f"{self.name}: credentials rejected (HTTP {status}): {self.auth_hint}"))
        if status in RETRY_STATUSES:
            raise SourceUnavailable(f"{self.name}: {self.host} answered HTTP {status} to {where} after "
                                    f"{attempts} attempt(s); try again later")
        raise ConnectorError(f"{self.name}: {where} answered HTTP {status}")

    def get_json(self, path: str, params: Mapping | None = None, **options) -> Any:
        return self.json_of(self.request("GET", path, params=params, **options))

    def post_json(self, path: str, payload: Any, **options) -> Any:
        return self.json_of(self.request("POST", path, json=payload, **options))

    def json_of(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise MalformedResponse(f"{self.name}: {response.request.method} {safe_path(response.url)} answered "
                                    f"HTTP {response.status_code} with a body that is not JSON") from None

    def _safe(self, text: str) -> str:
        return redact(text, self.secrets)

    # -- pagination --
    def pages_by_number(self, path: str, *, items: str | Callable[[Any], Any], params: Mapping | None = None,
                        page_param: str = "page", size_param: str | None = "per_page", size: int = 100,
                        start: int = 1, last_page: Callable[[Any], int | None] | None = None,
                        max_pages: int | None = None) -> Iterator["Page"]:
        """Page-number pagination (?page=1&per_page=100). `last_page(body)`
        gives the number of pages when the API says it; otherwise a short page
        is the last. Each Page's `next` is the page number to resume from."""
        page, read = start, 0
        while True:
            query = {**(params or {}), page_param: page}
            if size_param:
                query[size_param] = size
            body = self.get_json(path, params=query)
            rows = self.items_of(body, items, path)
            total = last_page(body) if last_page else None
            more = (page < total) if total is not None else (len(rows) >= size and len(rows) > 0)
            read += 1
            if max_pages is not None and read >= max_pages:
                more = False
            yield Page(rows, body, page + 1 if more else None)
            if not more:
                return
            page += 1

    def pages_by_offset(self, path: str, *, items: str | Callable[[Any], Any], params: Mapping | None = None,
                        offset_param: str = "offset", limit_param: str = "limit", limit: int = 100, start: int = 0,
                        total: Callable[[Any], int | None] | None = None) -> Iterator["Page"]:
        """Offset pagination (?offset=0&limit=100). Each Page's `next` is the
        offset to resume from."""
        offset = start
        while True:
            body = self.get_json(path, params={**(params or {}), offset_param: offset, limit_param: limit})
            rows = self.items_of(body, items, path)
            offset += len(rows)
            known = total(body) if total else None
            more = (offset < known) if known is not None else (len(rows) >= limit and len(rows) > 0)
            yield Page(rows, body, offset if more else None)
            if not more:
                return

    def pages_by_cursor(self, path: str, *, items: str | Callable[[Any], Any],
                        next: str | Callable[[Any, requests.Response], Any], params: Mapping | None = None,
                        cursor_param: str | None = None, start: Any = None) -> Iterator["Page"]:
        """Cursor or next-link pagination. `next` (a dotted path into the
        body, or a function of (body, response), e.g. `link_header_next`)
        gives the next token; with `cursor_param` it is sent as that query
        parameter, without it, it is a URL (same host) to fetch as is. Each
        Page's `next` is the token or URL to resume from (None at the end)."""
        token = start
        while True:
            if token is None:
                response = self.request("GET", path, params=params)
            elif cursor_param:
                response = self.request("GET", path, params={**(params or {}), cursor_param: token})
            else:
                response = self.request("GET", str(token))
            body = self.json_of(response)
            rows = self.items_of(body, items, path)
            token = next(body, response) if callable(next) else _dig(body, next)
            yield Page(rows, body, token or None)
            if not token:
                return

    def items_of(self, body: Any, items: str | Callable[[Any], Any], path: str) -> list:
        """The list of items in a page; MalformedResponse when it is not one."""
        try:
            rows = items(body) if callable(items) else _dig(body, items)
        except (KeyError, IndexError, TypeError, AttributeError):
            rows = None
        if not isinstance(rows, list):
            where = items if isinstance(items, str) else "the items"
            raise MalformedResponse(f"{self.name}: malformed page from {safe_path(self.url(path))}: "
                                    f"expected a list at {where!r}")
        return rows


@dataclass
class Page:
    items: list
    body: Any
    next: Any  # where to resume after this page (page number, offset, token or URL); None after the last


def link_header_next(body: Any, response: requests.Response) -> str | None:
    """`next` for APIs that paginate with an RFC 8288 Link header."""
    return (response.links.get("next") or {}).get("url")


def _dig(body: Any, dotted: str) -> Any:
    value = body
    for part in dotted.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def _reason(exc: Exception) -> str:
    text = type(exc).__name__
    inner = getattr(exc, "args", [None])[0]
    reason = getattr(inner, "reason", None)
    if reason is not None:
        text = type(reason).__name__
    return text


# -- webhooks ------------------------------------------------------------------------------


def verify_signature(secret: str | bytes, body: bytes, signature: str | None, *, algorithm: str = "sha256",
                     prefix: str = "", encoding: str = "hex") -> bool:
    """True when `signature` is the HMAC of `body` under `secret` (constant
    time). `prefix` is stripped first (e.g. "sha256="); `encoding` is "hex"
    or "base64", as the source sends it."""
    if not signature or not secret:
        return False
    if prefix:
        if not signature.startswith(prefix):
            return False
        signature = signature[len(prefix):]
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, body, getattr(hashlib, algorithm)).digest()
    expected = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    return hmac.compare_digest(expected.strip().lower() if encoding == "hex" else expected,
                               signature.strip().lower() if encoding == "hex" else signature.strip())


def sign(secret: str | bytes, body: bytes, *, algorithm: str = "sha256") -> str:
    """Hex HMAC of `body` (for destinations that sign what they send, and for tests)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, getattr(hashlib, algorithm)).hexdigest()
