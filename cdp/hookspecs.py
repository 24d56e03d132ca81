"""The plugin contract. Connectors are pip-installable packages that expose
a module under the `cdp.plugins` entry-point group; the first-party ones in
`plugins/` register through that same door.

Hooks take keyword arguments only, so a hook can gain an argument later
without breaking older plugins (pluggy passes only the arguments a plugin
names). Version of this contract: HOOKSPEC_VERSION.
"""
from __future__ import annotations

import pluggy

PROJECT = "cdp"
HOOKSPEC_VERSION = 1

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cdp_source_types():
    """Called once at start-up. Return a list of source connector classes
    (subclasses of `cdp.connectors.SourceConnector`) this plugin provides."""
