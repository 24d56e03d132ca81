"""The plugin contract (hook specifications).

A plugin is a module registered under the ``cdp.plugins`` entry-point group
(``[project.entry-points."cdp.plugins"]`` in its pyproject.toml); the
first-party connectors in ``plugins/`` register through that same door. A
plugin implements any of the hooks below with functions decorated by
``cdp.hookspecs.hookimpl`` and named like the hook.

Hooks take keyword arguments only, so a hook can gain an argument later
without breaking older plugins (pluggy passes a plugin only the arguments it
names). HOOKSPEC_VERSION goes up by one whenever a hook is added or gains an
argument; a hook is never removed or changed incompatibly within a major
version of cdp. docs/plugins.md documents each hook (a test keeps the two in
step).
"""
from __future__ import annotations

import pluggy

PROJECT = "cdp"
# 1: cdp_source_types; 2: + cdp_destination_types
HOOKSPEC_VERSION = 2

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cdp_source_types():
    """Called once, when the plugin manager loads plugins (the first time a
    command, the API or a worker needs a connector). Return a list of source
    connector classes: subclasses of ``cdp.connectors.SourceConnector`` whose
    ``name`` is unique among installed plugins."""


@hookspec
def cdp_destination_types():
    """Called once, when the plugin manager loads plugins. Return a list of
    destination connector classes: subclasses of
    ``cdp.connectors.DestinationConnector`` whose ``name`` is unique among
    installed plugins."""
