"""One error shape for activation's services (segments, access, portfolios, destinations and
activations): the field at fault, a message without personal data or secrets, and the HTTP status.
The API turns it into problem+json (`abort_problem`), the CLI into one line and exit 2 (`user_error`)."""
from __future__ import annotations


class FieldError(ValueError):
    status = 422

    def __init__(self, field: str, message: str, status: int | None = None):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message
        if status is not None:
            self.status = status


def abort_problem(exc: FieldError):
    from flask_smorest import abort

    abort(exc.status, message=exc.message, field=exc.field)


def user_error(exc: FieldError):
    from cdp.cli import UserError

    return UserError(f"{exc.field}: {exc.message}")
