"""The components edge-sync runs, by name: ``name -> "module:Class"``, imported when started.

Each class is constructed without arguments and subclasses
:class:`edge.sync._service.Component`. Add a line here to add a duty to edge-sync.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..config import EdgeConfig

if TYPE_CHECKING:
    from ._service import Component

COMPONENTS: dict[str, str] = {
    "publisher": "edge.sync._publisher:Publisher",
    "status_file": "edge.sync._statusfile:StatusFileWriter",
    "rules_down": "edge.sync._rules_down:RulesDownComponent",
    "device_status": "edge.sync._status:DeviceStatus",
}


def load_component(name: str) -> Component:
    """Construct the component registered as ``name``. Raises KeyError for an unknown name,
    ImportError/AttributeError for a broken entry."""
    module, attr = COMPONENTS[name].split(":")
    cls = getattr(importlib.import_module(module), attr)
    component: Component = cls()
    return component


def default_components(cfg: EdgeConfig) -> list[Component]:
    """Every registered component, in table order."""
    return [load_component(name) for name in COMPONENTS]
