"""docs/plugins.md is checked against the code it documents: the hooks and
their docstrings, HOOKSPEC_VERSION, the base classes' signatures, the
contract tests, and the worked example's listing."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from cdp import hookspecs
from cdp.connectors import DestinationConnector, SourceConnector
from cdp.testing import ConnectorContract

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")


def squash(text: str) -> str:
    return " ".join(text.replace("``", "`").split())


def test_every_hook_is_documented_with_its_docstring():
    hooks = {n: f for n, f in vars(hookspecs).items() if n.startswith("cdp_") and hasattr(f, "cdp_spec")}
    documented = set(re.findall(r"^### `(cdp_\w+)\(", DOC, re.M))
    assert documented == set(hooks)
    for name, fn in hooks.items():
        params = ", ".join(inspect.signature(fn).parameters)
        assert f"### `{name}({params})`" in DOC
        assert squash(inspect.getdoc(fn)) in squash(DOC), f"{name}: docstring and docs differ"
    assert f"HOOKSPEC_VERSION = {hookspecs.HOOKSPEC_VERSION}`" in DOC


def test_base_class_signatures_are_the_documented_ones():
    for cls, members in ((SourceConnector, ("__init__", "check", "streams", "read", "handle_webhook",
                                            "on_subject_request")),
                         (DestinationConnector, ("__init__", "check", "deliver", "remove", "on_subject_request"))):
        for member in members:
            sig = str(inspect.signature(getattr(cls, member))).replace("'", "")
            assert f"def {member}{sig}" in DOC, f"{cls.__name__}.{member}{sig} is not in docs/plugins.md"


def test_every_contract_test_is_listed():
    for name in (n for n in dir(ConnectorContract) if n.startswith("test_")):
        assert f"`{name}`" in DOC, name


def test_the_worked_example_is_the_example_connector():
    listing = DOC.split("<!-- example:connector -->\n```python\n", 1)[1].split("```\n<!-- /example:connector -->")[0]
    source = (ROOT / "examples" / "cdp-connector-example" / "src" / "cdp_connector_example" / "connector.py")
    assert listing == source.read_text(encoding="utf-8")
