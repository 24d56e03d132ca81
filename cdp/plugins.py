"""One plugin manager: loads every module registered under the `cdp.plugins`
entry-point group (first-party connectors included) and indexes the
connector types they provide.

A plugin that fails to import, or returns something that is not a
connector class, does not take the platform down: it is left out, logged
(type of error only) and shown by `cdp plugins list`.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points

import pluggy
from marshmallow import Schema

from cdp import hookspecs
from cdp.connectors import ConnectorError, DestinationConnector, SourceConnector

log = logging.getLogger(__name__)

GROUP = "cdp.plugins"
TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass
class PluginInfo:
    name: str
    distribution: str = "-"
    version: str = "-"
    hooks: list[str] = field(default_factory=list)
    source_types: list[str] = field(default_factory=list)
    destination_types: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


_INFO: dict[str, PluginInfo] = {}


@lru_cache(maxsize=1)
def manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    _INFO.clear()
    for ep in entry_points(group=GROUP):
        if pm.get_plugin(ep.name) is not None or ep.name in _INFO:
            continue
        dist = ep.dist
        info = _INFO[ep.name] = PluginInfo(ep.name, dist.name if dist else "-", dist.version if dist else "-")
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the platform
            info.problems.append(f"failed to load ({type(exc).__name__})")
            log.warning("plugin %s failed to load: %s", ep.name, type(exc).__name__)
    return pm


def register(plugin, name: str) -> None:
    """Register a plugin object in this process only (tests, embedding);
    installed plugins come from the entry point instead."""
    manager().register(plugin, name=name)
    _INFO[name] = PluginInfo(name)
    _types.cache_clear()


def unregister(name: str) -> None:
    pm = manager()
    if pm.get_plugin(name) is not None:
        pm.unregister(name=name)
    _INFO.pop(name, None)
    _types.cache_clear()


def reset() -> None:
    """Forget loaded plugins (after installing one in the same process)."""
    manager.cache_clear()
    _types.cache_clear()


@lru_cache(maxsize=2)
def _types(hook: str) -> dict[str, type]:
    base = SourceConnector if hook == "cdp_source_types" else DestinationConnector
    attr = "source_types" if hook == "cdp_source_types" else "destination_types"
    pm = manager()
    for info in _INFO.values():  # recomputed after register/unregister: start clean
        setattr(info, attr, [])
        info.problems = [p for p in info.problems if not p.startswith(hook)]
    found: dict[str, type] = {}
    # Called plugin by plugin (first-registered first), to say which plugin returned what.
    for impl in getattr(pm.hook, hook).get_hookimpls():
        info = _INFO.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
        try:
            classes = impl.function() or []
        except Exception as exc:  # noqa: BLE001
            info.problems.append(f"{hook} raised {type(exc).__name__}")
            continue
        for cls in classes:
            problem = _problem(cls, base)
            if problem is None and cls.name in found:
                problem = f"type {cls.name!r} is already provided by another plugin"
            if problem:
                info.problems.append(f"{hook}: {problem}")
                continue
            found[cls.name] = cls
            getattr(info, attr).append(cls.name)
    return found


def _problem(cls, base: type) -> str | None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return f"{cls!r} is not a subclass of {base.__module__}.{base.__name__}"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not TYPE_NAME.match(name):
        return f"{cls.__name__}.name must be snake_case"
    schema = getattr(cls, "config_schema", None)
    if not (isinstance(schema, type) and issubclass(schema, Schema)):
        return f"{cls.__name__}.config_schema must be a marshmallow Schema class"
    return None


def source_types() -> dict[str, type[SourceConnector]]:
    return dict(_types("cdp_source_types"))


def destination_types() -> dict[str, type[DestinationConnector]]:
    return dict(_types("cdp_destination_types"))


def source_type(name: str) -> type[SourceConnector]:
    types = source_types()
    if name not in types:
        known = ", ".join(sorted(types)) or "none"
        raise ConnectorError(f"unknown source type {name!r} (installed: {known}); see `cdp plugins list`")
    return types[name]


def destination_type(name: str) -> type[DestinationConnector]:
    types = destination_types()
    if name not in types:
        known = ", ".join(sorted(types)) or "none"
        raise ConnectorError(f"unknown destination type {name!r} (installed: {known}); see `cdp plugins list`")
    return types[name]


def describe() -> list[dict]:
    """Name, distribution version, hooks implemented, types provided and
    problems of every plugin found."""
    pm = manager()
    _types("cdp_source_types")
    _types("cdp_destination_types")
    out = []
    for name, info in _INFO.items():
        plugin = pm.get_plugin(name)
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or [])) if plugin is not None else []
        out.append({
            "name": name,
            "distribution": info.distribution,
            "version": info.version,
            "hooks": hooks,
            "source_types": sorted(info.source_types),
            "destination_types": sorted(info.destination_types),
            "problems": list(info.problems),
        })
    return out
