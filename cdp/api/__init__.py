"""REST API (flask-smorest): one set of marshmallow schemas validates
requests, serializes responses and writes the OpenAPI document.

Every error is application/problem+json naming the field; nothing returns a
traceback, and nothing personal is logged."""
from __future__ import annotations

import json
import logging
from functools import wraps
from pathlib import Path

from flask import Flask, g, jsonify, request, send_from_directory
from flask_smorest import Api, Blueprint, abort
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

from cdp.auth import verify_api_key

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


class CdpApi(Api):
    def handle_http_exception(self, error: HTTPException):
        data = getattr(error, "data", {}) or {}
        body = {"type": "about:blank", "title": error.name, "status": error.code}
        messages = data.get("messages")
        if messages:
            # {"json": {"records": ["..."]}} -> {"records": ["..."]}
            flat = {}
            for location, errs in messages.items():
                from schemas.record import flatten_errors

                flat.update(flatten_errors(errs))
            body["errors"] = flat
            body["detail"] = "Invalid field(s): " + ", ".join(sorted(flat))
        elif data.get("message"):
            body["detail"] = data["message"]
        else:
            body["detail"] = error.description
        for key in ("field",):
            if data.get(key):
                body[key] = data[key]
        response = jsonify(body)
        response.status_code = error.code or 500
        response.content_type = PROBLEM
        if error.code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="cdp"'
        return response


class CdpParser(FlaskParser):
    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise
        except (RecursionError, ValueError):
            # Nested too deep, or an integer past Python's int max-str-digits:
            # an invalid body (400), as webargs only handles JSONDecodeError.
            raise json.JSONDecodeError("unparseable JSON", "<body>", 0) from None


class CdpBlueprint(Blueprint):
    ARGUMENTS_PARSER = CdpParser()


def init_api(app: Flask) -> None:
    import swagger_ui_bundle

    app.config.update(
        API_TITLE="CDP API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Served from the swagger-ui-bundle package: no CDN, works offline.
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
        },
    )
    api = CdpApi(app)
    assets = Path(swagger_ui_bundle.swagger_ui_path)

    @app.get("/docs/assets/<path:filename>")
    def swagger_assets(filename):
        return send_from_directory(assets, filename)

    from cdp.api import health, profiles, records
    from schemas.record import RecordSchema

    api.spec.components.schema("Record", schema=RecordSchema)
    api.register_blueprint(health.blp)
    api.register_blueprint(records.blp)
    api.register_blueprint(profiles.blp)
    from cdp.api import connectors as connectors_api

    api.register_blueprint(connectors_api.blp)
    from consent.api import blp as consent_blp

    api.register_blueprint(consent_blp)
    from cdp.api import dsr as dsr_api  # data-subject requests, legal holds, processing records, incidents

    api.register_blueprint(dsr_api.blp)
    from identity.api import blp as identity_blp

    api.register_blueprint(identity_blp)
    from activation.api import blp as segments_blp  # segments and their members (docs/segments.md)

    api.register_blueprint(segments_blp)
    from activation.portfolio_api import blp as portfolios_blp  # portfolios, managers, snapshots

    api.register_blueprint(portfolios_blp)
    from activation.activations_api import blp as activations_blp  # destinations, activations (docs/activation.md)

    api.register_blueprint(activations_blp)
    from cdp.console import init_console  # DPO console: server-rendered pages at /console/

    init_console(app)

    @app.errorhandler(Exception)
    def _unexpected(error):  # never a traceback to the caller
        if isinstance(error, HTTPException):
            return api.handle_http_exception(error)
        log.error("unhandled %s on %s %s", type(error).__name__, request.method, request.url_rule)
        response = jsonify({"type": "about:blank", "title": "Internal Server Error", "status": 500,
                            "detail": "The server failed to process the request; it has been logged."})
        response.status_code = 500
        response.content_type = PROBLEM
        return response


def require_scope(scope: str):
    """Bearer API key with the given scope: 401 without a valid key, 403
    with a key that lacks the scope."""

    def decorator(fn):
        @wraps(fn)
        def wrapper(*args, **kwargs):
            from flask import current_app

            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                abort(401, message="Missing API key: send Authorization: Bearer <key>")
            runtime = current_app.extensions["cdp"]
            with runtime.session() as session:
                key = verify_api_key(session, header[7:].strip())
                if key is None:
                    abort(401, message="Invalid or revoked API key")
                if scope not in key.scopes and "admin" not in key.scopes:
                    abort(403, message=f"This API key lacks the {scope!r} scope")
                g.api_key_name = key.name
                g.api_key_id = key.id
            return fn(*args, **kwargs)

        return wrapper

    return decorator
