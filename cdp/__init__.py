"""Privacy-first customer data platform: the Flask application factory."""
from __future__ import annotations

import logging

from flask import Flask

from cdp.config import Settings
from cdp.crypto import Keyring
from cdp.store import Runtime

__version__ = "0.1.0"


def create_app(settings: Settings | None = None, keyring: Keyring | None = None) -> Flask:
    settings = settings or Settings.from_env()
    keyring = keyring or Keyring.load(settings)
    app = Flask(__name__, instance_path=str(settings.instance_path))
    app.config.update(
        MAX_CONTENT_LENGTH=10 * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.extensions["cdp"] = Runtime(settings, keyring)

    from cdp.api import init_api

    init_api(app)
    logging.getLogger("cdp").setLevel(logging.INFO)
    return app


def runtime_of(app: Flask) -> Runtime:
    return app.extensions["cdp"]
