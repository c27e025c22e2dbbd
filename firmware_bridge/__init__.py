"""firmware_bridge: microcontrollers over serial, CAN buses with DBCs and Modbus devices, each
device an agent of edged (through edge.sdk), with device-confirmed Acks and layered safe
state. Run as its own process, ``edge-bridge``.

Layering: above edge.sdk and edge.runtime, never imported by them. Inside, bottom-up:
errors -> regs (register codec) -> profile -> link (base, breaker, backend table) ->
backends (modbus, can, mcu; imported lazily) -> device -> config -> service -> main.
The optional drivers (pymodbus, python-can/cantools, pyserial) load only with their backend.
"""

from ._config import BridgeConfig as BridgeConfig
from ._config import DeviceSpec as DeviceSpec
from ._config import LinkSpec as LinkSpec
from ._config import load_bridge_config as load_bridge_config
from ._errors import ActionError as ActionError
from ._errors import BackendError as BackendError
from ._errors import BridgeError as BridgeError
from ._errors import LinkError as LinkError
from ._errors import ProfileError as ProfileError
from ._link import BACKENDS as BACKENDS
from ._link import Breaker as Breaker
from ._link import Link as Link
from ._link import backend as backend
from ._main import main as main
from ._profile import Profile as Profile
from ._profile import load_profile as load_profile
from ._profile import parse_profile as parse_profile
from ._service import Bridge as Bridge
from ._service import serve as serve

__all__ = [
    "BACKENDS",
    "ActionError",
    "BackendError",
    "Breaker",
    "Bridge",
    "BridgeConfig",
    "BridgeError",
    "DeviceSpec",
    "Link",
    "LinkError",
    "LinkSpec",
    "Profile",
    "ProfileError",
    "backend",
    "load_bridge_config",
    "load_profile",
    "main",
    "parse_profile",
    "serve",
]
