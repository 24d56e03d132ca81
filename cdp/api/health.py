from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import text

from schemas.api import HealthOut

blp = Blueprint("health", __name__, url_prefix="/", description="Liveness and readiness")


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200, HealthOut)
    @blp.doc(security=[])
    def get(self):
        runtime = current_app.extensions["cdp"]
        database = "ok"
        try:
            with runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            database = "unreachable"
        jobs = "in-process"
        if runtime.settings.redis_url:
            from cdp.jobs import redis_connection

            try:
                redis_connection(runtime.settings.redis_url).ping()
                jobs = "ok"
            except Exception:
                jobs = "unreachable"
        status = "ok" if database == "ok" and jobs != "unreachable" else "degraded"
        return {"status": status, "database": database, "jobs": jobs}
