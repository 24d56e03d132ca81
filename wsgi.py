"""WSGI entry point: `gunicorn wsgi:app` (settings from the environment)."""
from cdp import create_app

app = create_app()
