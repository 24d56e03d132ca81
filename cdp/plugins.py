"""One plugin manager: loads every package registered under the `cdp.plugins`
entry-point group (first-party connectors included) and indexes the source
types they provide."""
from __future__ import annotations

from functools import lru_cache

import pluggy

from cdp import hookspecs


@lru_cache(maxsize=1)
def manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints("cdp.plugins")
    return pm


def source_types() -> dict[str, type]:
    types: dict[str, type] = {}
    for group in manager().hook.cdp_source_types():
        for cls in group or []:
            types[cls.name] = cls
    return types


def describe() -> list[dict]:
    """Name, distribution version and hooks of every loaded plugin."""
    pm = manager()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist = dists.get(id(plugin))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({
            "name": name,
            "distribution": dist.project_name if dist else "-",
            "version": dist.version if dist else "-",
            "hooks": hooks,
        })
    return out
