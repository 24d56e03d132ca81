"""A local HTTP server for connector tests: serves recorded JSON pages on
127.0.0.1 (a free port, in a thread) and can be told to misbehave.

    with FixtureServer() as server:
        server.load(Path("tests/fixtures/acme"))        # routes.json + recorded pages
        server.fail("/api/orders", 429, retry_after=1)  # next call: 429 Retry-After: 1
        server.fail("/api/orders", 500, times=10)       # the next ten: 500
        server.malformed("/api/orders")                 # next call: 200 with broken JSON
        connector = Acme({"base_url": server.url, ...})

``routes.json`` (beside the recorded pages)::

    {"auth": {"headers": {"Authorization": "Bearer test-token"}},
     "routes": [
       {"path": "/api/orders", "query": {"page": "1"}, "file": "orders_page1.json"},
       {"path": "/api/orders/1001", "file": "order_1001.json"},
       {"method": "POST", "path": "/api/hook", "status": 202, "json": {"ok": true}}
     ]}

A route matches on method, exact path and the query parameters it lists
(others are ignored; the route listing most of them wins). With ``auth``,
a request lacking those headers (or query parameters) gets 401.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

_MISSING = object()


class _Quiet(WSGIRequestHandler):
    # The server stands for the remote source: its access log is not the connector's, and would
    # put query strings (and the secrets some APIs take there) into the logs a test inspects.
    def log_request(self, code="-", size="-"):
        pass


@dataclass
class Route:
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    handler: Callable[[Request], Any] | None = None


@dataclass
class Fault:
    path: str  # "*" for any path
    status: int
    times: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class SeenRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0


class FixtureServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.routes: list[Route] = []
        self.faults: list[Fault] = []
        self.requests: list[SeenRequest] = []
        self.required_headers: dict[str, str] = {}
        self.required_query: dict[str, str] = {}
        self.open_paths: set[str] = set()
        self._lock = threading.Lock()
        self._server = None
        self._thread: threading.Thread | None = None

    # -- life cycle --
    def start(self) -> "FixtureServer":
        self._server = make_server(self.host, 0, self._wsgi, threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="cdp-fixture-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=30)
            self._server = None

    def __enter__(self) -> "FixtureServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FixtureServer is not started")
        return f"http://{self.host}:{self._server.server_port}"

    # -- what to serve --
    def add(self, path: str, *, json: Any = _MISSING, body: bytes | str | None = None, status: int = 200,
            query: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None, method: str = "GET",
            handler: Callable[[Request], Any] | None = None) -> Route:
        """Serve `json` (or raw `body`) at `path`; or call `handler(request)`,
        which returns a werkzeug Response or (status, json-able body)."""
        head = dict(headers or {})
        if json is not _MISSING:
            payload = _json_bytes(json)
            head.setdefault("Content-Type", "application/json")
        else:
            payload = body.encode() if isinstance(body, str) else (body or b"")
        route = Route(method.upper(), path, {k: str(v) for k, v in (query or {}).items()}, status, payload, head,
                      handler)
        with self._lock:
            self.routes.append(route)
        return route

    def load(self, directory: Path | str, manifest: str = "routes.json") -> None:
        """Serve the recorded pages a manifest lists (see the module doc)."""
        directory = Path(directory)
        spec = json.loads((directory / manifest).read_text(encoding="utf-8"))
        auth = spec.get("auth") or {}
        self.require(headers=auth.get("headers"), query=auth.get("query"))
        for item in spec["routes"]:
            kwargs = {"status": item.get("status", 200), "query": item.get("query"), "headers": item.get("headers"),
                      "method": item.get("method", "GET")}
            if "file" in item:
                kwargs["body"] = (directory / item["file"]).read_bytes()
                kwargs["headers"] = {"Content-Type": "application/json", **(item.get("headers") or {})}
            elif "json" in item:
                kwargs["json"] = item["json"]
            self.add(item["path"], **kwargs)

    def require(self, headers: Mapping[str, str] | None = None, query: Mapping[str, str] | None = None,
                *, except_paths: Iterable[str] = ()) -> None:
        """Answer 401 to requests without these header (or query) values,
        except on `except_paths` (an OAuth token endpoint takes other credentials)."""
        self.required_headers = dict(headers or {})
        self.required_query = {k: str(v) for k, v in (query or {}).items()}
        self.open_paths = set(except_paths)

    def fail(self, path: str, status: int, *, times: int = 1, retry_after: int | str | None = None,
             body: Any = None) -> None:
        """The next `times` requests to `path` ("*": any) get `status`
        (429 with a Retry-After header when `retry_after` is given, 500, 401...)."""
        head = {"Content-Type": "application/json"}
        if retry_after is not None:
            head["Retry-After"] = str(retry_after)
        payload = _json_bytes(body if body is not None else {"error": f"fixture fault {status}"})
        with self._lock:
            self.faults.append(Fault(path, status, times, head, payload))

    def malformed(self, path: str, *, times: int = 1) -> None:
        """The next `times` requests to `path` get 200 with a truncated JSON body."""
        with self._lock:
            self.faults.append(Fault(path, 200, times, {"Content-Type": "application/json"}, b'{"list": [{"orderId": '))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def hits(self, path: str | None = None, method: str | None = None) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests
                    if (path is None or r.path == path) and (method is None or r.method == method.upper())]

    # -- the WSGI app --
    def _wsgi(self, environ, start_response):
        request = Request(environ)
        response = self._answer(request)
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        seen = SeenRequest(request.method, request.path, {k: v for k, v in request.args.items()},
                           dict(request.headers.items()), request.get_data())
        with self._lock:
            self.requests.append(seen)
            fault = next((f for f in self.faults if f.times > 0 and f.path in ("*", request.path)), None)
            if fault is not None:
                fault.times -= 1
        if fault is not None:
            response = Response(fault.body, status=fault.status, headers=fault.headers)
        elif not self._authorized(request):
            response = Response(_json_bytes({"error": "unauthorized"}), status=401,
                                headers={"Content-Type": "application/json"})
        else:
            response = self._route(request)
        seen.status = response.status_code
        return response

    def _authorized(self, request: Request) -> bool:
        if request.path in self.open_paths:
            return True
        for name, value in self.required_headers.items():
            if request.headers.get(name) != value:
                return False
        for name, value in self.required_query.items():
            if request.args.get(name) != value:
                return False
        return True

    def _route(self, request: Request) -> Response:
        with self._lock:
            candidates = [r for r in self.routes if r.method == request.method and r.path == request.path
                          and all(request.args.get(k) == v for k, v in r.query.items())]
        if not candidates:
            return Response(_json_bytes({"error": f"no fixture for {request.method} {request.path}"}), status=404,
                            headers={"Content-Type": "application/json"})
        route = max(candidates, key=lambda r: len(r.query))
        if route.handler is not None:
            result = route.handler(request)
            if isinstance(result, Response):
                return result
            status, payload = result
            return Response(_json_bytes(payload), status=status, headers={"Content-Type": "application/json"})
        return Response(route.body, status=route.status, headers=route.headers)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")
