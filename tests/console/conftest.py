"""DPO console helpers: staff accounts, logging in through the form (with
its CSRF token), and reading tokens out of pages."""
from __future__ import annotations

import re

import pytest

PASSWORD = "senha-forte-do-encarregado"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(client, email: str, password: str = PASSWORD):
    page = client.get("/console/login")
    return client.post("/console/login", data={"email": email, "password": password,
                                               "csrf_token": csrf_of(page.get_data(as_text=True))})


def post_form(client, url: str, data: dict | None = None, page: str = "/console/requests"):
    """POST a console form with the session's CSRF token (taken from a page, as a browser would)."""
    token = csrf_of(client.get(page).get_data(as_text=True))
    return client.post(url, data={**(data or {}), "csrf_token": token})


@pytest.fixture
def staff(runtime):
    """Factory: a staff account with the given role; returns its e-mail."""
    from cdp.console.staff import add_staff

    def make(role: str = "dpo", email: str | None = None) -> str:
        email = email or f"{role}@empresa.com.br"
        add_staff(runtime, email, role, PASSWORD)
        return email

    return make


@pytest.fixture
def dpo_client(client, staff):
    assert login(client, staff("dpo")).status_code == 303
    return client
