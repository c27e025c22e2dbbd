"""The host's frame codec: the firmware's own ``firmware_bridge/mcu/frames.py``, imported as is.

One source for both ends of the link (that file runs on MicroPython as the board's
``frames.py``, on the host as this module); its docstring draws every frame layout. Tests run
it on both interpreters and check that they agree.
"""

from __future__ import annotations

from firmware_bridge.mcu import frames as _firmware_frames
from firmware_bridge.mcu.frames import *  # noqa: F403 - one source with the firmware

SOURCE = _firmware_frames.__file__
"""The path of the one source file (what goes to the board as frames.py)."""
