"""The MCU link's public names: McuLink over pyserial, its events, and the simulated board.

See firmware_bridge._mcu._link for the API and firmware_bridge/mcu/frames.py for the frames.
"""

from firmware_bridge._mcu._link import RESET_CAUSES as RESET_CAUSES
from firmware_bridge._mcu._link import CommandAck as CommandAck
from firmware_bridge._mcu._link import Event as Event
from firmware_bridge._mcu._link import LinkFault as LinkFault
from firmware_bridge._mcu._link import McuCommandError as McuCommandError
from firmware_bridge._mcu._link import McuError as McuError
from firmware_bridge._mcu._link import McuHello as McuHello
from firmware_bridge._mcu._link import McuLink as McuLink
from firmware_bridge._mcu._link import McuOpenError as McuOpenError
from firmware_bridge._mcu._link import McuPoint as McuPoint
from firmware_bridge._mcu._link import McuReset as McuReset
from firmware_bridge._mcu._link import McuStatus as McuStatus
from firmware_bridge._mcu._link import Reading as Reading
from firmware_bridge._mcu._sim import FIRMWARE_DIR as FIRMWARE_DIR
from firmware_bridge._mcu._sim import SimulatedMcu as SimulatedMcu
from firmware_bridge._mcu._sim import SimulatorError as SimulatorError
