"""Hook specifications, plugin discovery through the cdp.plugins entry point
(broken plugins reported, never fatal), and `cdp plugins list`."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

from cdp import hookspecs, plugins
from cdp.connectors import DestinationConnector, SourceConnector
from cdp.hookspecs import hookimpl
from plugins.vtex import VtexOrders


def hookspec_functions():
    return {name: fn for name, fn in vars(hookspecs).items()
            if name.startswith("cdp_") and callable(fn) and hasattr(fn, "cdp_spec")}


def test_hookspecs_are_small_documented_and_keyword_only():
    specs = hookspec_functions()
    assert set(specs) == {"cdp_source_types", "cdp_destination_types"}
    assert isinstance(hookspecs.HOOKSPEC_VERSION, int) and hookspecs.HOOKSPEC_VERSION >= 2
    for name, fn in specs.items():
        doc = inspect.getdoc(fn)
        assert doc and doc.startswith("Called") and "Return" in doc, name  # when it is called, what it returns
        for param in inspect.signature(fn).parameters.values():
            assert param.kind is param.KEYWORD_ONLY or param.default is not param.empty, name


def test_first_party_plugins_register_through_the_entry_point():
    plugins.reset()
    described = {p["name"]: p for p in plugins.describe()}
    assert described["vtex"]["distribution"] == "cdp" and described["vtex"]["hooks"] == ["cdp_source_types"]
    assert described["vtex"]["source_types"] == ["vtex"]
    assert described["webhook_destination"]["hooks"] == ["cdp_destination_types"]
    assert plugins.source_types()["vtex"] is VtexOrders
    assert set(plugins.source_types()) >= {"file", "vtex", "html_form"}
    assert set(plugins.destination_types()) >= {"webhook"}
    assert all(p["problems"] == [] for p in described.values())


class NotAConnector:
    name = "nope"


class DuplicateVtex(SourceConnector):
    name = "vtex"
    config_schema = VtexOrders.config_schema


class BadName(SourceConnector):
    name = "Bad Name"
    config_schema = VtexOrders.config_schema


class MisfiledDestination(SourceConnector):
    name = "misfiled"
    config_schema = VtexOrders.config_schema


class SloppyPlugin:
    @hookimpl
    def cdp_source_types(self):
        return [NotAConnector, DuplicateVtex, BadName]

    @hookimpl
    def cdp_destination_types(self):
        return [MisfiledDestination]


class ExplodingPlugin:
    @hookimpl
    def cdp_source_types(self):
        raise RuntimeError("boom")


def test_bad_plugins_are_reported_and_left_out(test_plugin):
    test_plugin(SloppyPlugin(), "sloppy")
    test_plugin(ExplodingPlugin(), "exploding")
    assert plugins.source_types()["vtex"] is VtexOrders  # the first provider keeps the name
    assert "nope" not in plugins.source_types() and "Bad Name" not in plugins.source_types()
    assert "misfiled" not in plugins.destination_types()
    described = {p["name"]: p for p in plugins.describe()}
    problems = " | ".join(described["sloppy"]["problems"])
    assert "is not a subclass of cdp.connectors.SourceConnector" in problems
    assert "type 'vtex' is already provided by another plugin" in problems
    assert "BadName.name must be snake_case" in problems
    assert "is not a subclass of cdp.connectors.DestinationConnector" in problems
    assert described["exploding"]["problems"] == ["cdp_source_types raised RuntimeError"]


def write_distribution(root, name: str, module: str, body: str = "") -> None:
    """A real installed distribution (dist-info on sys.path) with a cdp.plugins entry point."""
    info = root / f"{name}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[cdp.plugins]\n{name} = {module}\n")
    if body:
        (root / f"{module}.py").write_text(body)


def test_a_plugin_that_fails_to_import_does_not_break_the_platform(tmp_path, monkeypatch):
    write_distribution(tmp_path, "broken_plugin", "no_such_module_for_cdp")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.reset()
    try:
        described = {p["name"]: p for p in plugins.describe()}
        assert described["broken_plugin"]["problems"] == ["failed to load (ModuleNotFoundError)"]
        assert described["broken_plugin"]["version"] == "0.3"
        assert "vtex" in plugins.source_types()
    finally:
        monkeypatch.undo()
        plugins.reset()


def test_plugins_list_shows_name_version_hooks_types_and_problems(tmp_path):
    write_distribution(tmp_path, "acme_connector", "acme_connector_mod", body=(
        "from cdp.hookspecs import hookimpl\n"
        "from plugins.vtex import VtexOrders\n\n"
        "class Acme(VtexOrders):\n    name = 'acme'\n    title = 'Acme'\n\n"
        "@hookimpl\ndef cdp_source_types():\n    return [Acme]\n"))
    write_distribution(tmp_path / "more", "broken_plugin", "no_such_module_for_cdp")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(tmp_path / "more")])}
    proc = subprocess.run([sys.executable, "-m", "cdp.cli", "plugins", "list"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "acme_connector\tacme_connector 0.3\tcdp_source_types\tacme" in lines
    assert "vtex\tcdp 0.1.0\tcdp_source_types\tvtex" in lines
    assert any(line.startswith("broken_plugin\tbroken_plugin 0.3\t-\t-\tPROBLEM: failed to load") for line in lines)
    assert "source types: acme, bling, file, html_form, nuvemshop, rd_station, reclame_aqui, typeform, vtex" in lines
    assert "destination types: email_list, file_drop, webhook" in lines
    assert f"hookspec version: {hookspecs.HOOKSPEC_VERSION}" in lines
    # `cdp plugin ...` is the same group.
    alias = subprocess.run([sys.executable, "-m", "cdp.cli", "plugin", "list"], capture_output=True, text=True,
                           timeout=300)
    assert "vtex\tcdp 0.1.0" in alias.stdout


def test_base_classes_have_working_defaults():
    from cdp.connectors import Subject, WebhookError

    class Minimal(SourceConnector):
        name = "minimal"
        config_schema = VtexOrders.config_schema

    connector = Minimal({"account": "loja", "app_key": "k", "app_token": "t"})
    assert connector.streams() == ["default"] and connector.source == "minimal"
    connector.check()
    with pytest.raises(NotImplementedError):
        list(connector.read("default"))
    with pytest.raises(WebhookError) as info:
        connector.handle_webhook(b"{}", {})
    assert info.value.status == 404
    for action in ("delete", "correct"):
        result = connector.on_subject_request(action, Subject(external_ids=["x"]))
        assert result.status == "manual" and " / " in result.detail  # pt-BR / English

    class MinimalDestination(DestinationConnector):
        name = "minimal_destination"
        config_schema = VtexOrders.config_schema

    destination = MinimalDestination({"account": "loja", "app_key": "k", "app_token": "t"})
    with pytest.raises(NotImplementedError):
        destination.deliver([{"x": 1}], "key-1")
    with pytest.raises(NotImplementedError):
        destination.remove(["ref"])
    assert destination.on_subject_request("delete", Subject()).status == "manual"
    from cdp.connectors import ActionResult

    with pytest.raises(ValueError):
        ActionResult("maybe")


def test_type_lookup_names_what_is_installed():
    from cdp.connectors import ConnectorError
    from plugins.webhook_destination import WebhookDestination

    assert plugins.source_type("vtex") is VtexOrders
    assert plugins.destination_type("webhook") is WebhookDestination
    with pytest.raises(ConnectorError,
                       match=r"unknown destination type 'mailchimp' \(installed: email_list, file_drop, webhook\)"):
        plugins.destination_type("mailchimp")
