"""Board layer of the MCU firmware: a Raspberry Pi Pico (RP2040) on MicroPython 1.27.

The only module that touches ``machine``: pins, ADC channels, PWM, UART0, the watchdog and the
board's timing constants. Everything above it (app.py, frames.py) is plain MicroPython. In the
tests the real interpreter (MicroPython's WebAssembly port) runs this same file against a
``machine`` stand-in (firmware_bridge/_mcu/wasm/machine.py) whose UART is a pty.

Pin map (Pico):

    GP0  UART0 TX  -> host RX        GP26 ADC0  "pot"      0..3.3 V
    GP1  UART0 RX  <- host TX        ADC4       "temp_c"   the RP2040's own sensor
    GP15 "button"  input, pull-up, pressed = 1
    GP16 "relay"   output, safe 0    GP17 "fan" PWM 25 kHz, duty 0..1, safe 0
    GP25 on-board LED: on while the host's heartbeats arrive
"""

import os
import time

import frames
import machine
from micropython import const

UART_ID = const(0)
BAUD = const(115200)

HEARTBEAT_MS = const(100)  # the host sends one heartbeat per period
MISSED_MAX = const(3)  # outputs go safe after this many missed periods (300 ms)
WDT_MS = const(1500)  # machine.WDT: fires only if the loop stops feeding it
SAMPLE_MS = const(100)  # one READINGS frame per period
STATUS_MS = const(1000)  # one STATUS frame per period (and on each change)
LOOP_BUDGET_MS = const(50)  # an iteration over this is an overrun: no feed for it

_VREF = 3.3
_ADC_FULL = 65535.0

# (name, unit, kind, pin or ADC channel, safe value for outputs)
POINTS = (
    ("temp_c", "degC", frames.KIND_ANALOG_IN, 4, 0.0),
    ("pot", "V", frames.KIND_ANALOG_IN, 0, 0.0),
    ("button", "", frames.KIND_DIGITAL_IN, 15, 0.0),
    ("relay", "", frames.KIND_DIGITAL_OUT, 16, 0.0),
    ("fan", "ratio", frames.KIND_PWM_OUT, 17, 0.0),
)

RESET_POWER_ON = const(0)
RESET_WATCHDOG = const(1)
RESET_OTHER = const(2)


class Board:
    """The Pico's inputs and outputs; outputs are at their safe values once this returns."""

    def __init__(self) -> None:
        self._io: list = []
        self._out: list = []
        for _name, _unit, kind, where, safe in POINTS:
            if kind == frames.KIND_ANALOG_IN:
                self._io.append(machine.ADC(where))
            elif kind == frames.KIND_DIGITAL_IN:
                self._io.append(machine.Pin(where, machine.Pin.IN, machine.Pin.PULL_UP))
            elif kind == frames.KIND_DIGITAL_OUT:
                self._io.append(machine.Pin(where, machine.Pin.OUT, value=int(safe)))
            else:
                pwm = machine.PWM(machine.Pin(where))
                pwm.freq(25000)
                pwm.duty_u16(int(safe * 65535))
                self._io.append(pwm)
            self._out.append(safe)
        self._led = machine.Pin(25, machine.Pin.OUT, value=0)
        self._uart = machine.UART(UART_ID, baudrate=BAUD, tx=machine.Pin(0), rx=machine.Pin(1),
                                  rxbuf=1024, txbuf=1024)
        self._wdt: machine.WDT | None = None

    def points(self) -> list:
        """[(name, unit, kind), ...] as HELLO announces them."""
        return [(p[0], p[1], p[2]) for p in POINTS]

    def read(self, i: int) -> float:
        """The engineering value of point ``i``; raises OSError if the peripheral failed."""
        kind = POINTS[i][2]
        dev = self._io[i]
        if kind == frames.KIND_ANALOG_IN:
            volts = dev.read_u16() * _VREF / _ADC_FULL
            if POINTS[i][3] == 4:
                return 27.0 - (volts - 0.706) / 0.001721
            return volts
        if kind == frames.KIND_DIGITAL_IN:
            return 0.0 if dev.value() else 1.0  # pulled up: pressed reads 0
        return self._out[i]

    def is_output(self, i: int) -> bool:
        return POINTS[i][2] >= frames.KIND_DIGITAL_OUT

    def check(self, i: int, value: float) -> str:
        """Why ``value`` cannot go to output ``i`` ('' if it can)."""
        if POINTS[i][2] == frames.KIND_DIGITAL_OUT:
            return "" if value in (0, 1) else f"{POINTS[i][0]} takes 0 or 1"
        return "" if 0.0 <= value <= 1.0 else f"{POINTS[i][0]} takes a duty of 0..1"

    def write(self, i: int, value: float) -> None:
        """Drive output ``i`` (checked by check() first)."""
        if POINTS[i][2] == frames.KIND_DIGITAL_OUT:
            self._io[i].value(int(value))
        else:
            self._io[i].duty_u16(int(value * 65535 + 0.5))
        self._out[i] = float(value)

    def safe_outputs(self) -> None:
        """Every output to its safe value (each one tried even if another fails)."""
        for i in range(len(POINTS)):
            if self.is_output(i):
                try:
                    self.write(i, POINTS[i][4])
                except Exception:  # noqa: BLE001 - the others must still go safe
                    pass

    def led(self, on: bool) -> None:
        self._led.value(1 if on else 0)

    def uart_write(self, data: bytes) -> None:
        self._uart.write(data)

    def uart_read(self) -> bytes:
        if not self._uart.any():
            return b""
        data = self._uart.read()
        return data if data else b""

    def wait(self, ms: int) -> None:
        """Sleep up to ``ms`` ms, waking early when UART bytes arrive (machine.idle: ~1 ms)."""
        start = time.ticks_ms()
        while not self._uart.any() and time.ticks_diff(time.ticks_ms(), start) < ms:
            machine.idle()

    def ticks_ms(self) -> int:
        return time.ticks_ms()

    def ticks_diff(self, a: int, b: int) -> int:
        return time.ticks_diff(a, b)

    def watchdog_start(self) -> None:
        self._wdt = machine.WDT(timeout=WDT_MS)

    def watchdog_feed(self) -> None:
        if self._wdt is not None:
            self._wdt.feed()

    def reset_cause(self) -> int:
        cause = machine.reset_cause()
        if cause == machine.WDT_RESET:
            return RESET_WATCHDOG
        if cause == machine.PWRON_RESET:
            return RESET_POWER_ON
        return RESET_OTHER

    def boot_id(self) -> int:
        """A random u32 per boot (the RP2040's ROSC through os.urandom)."""
        if hasattr(os, "urandom"):
            b = os.urandom(4)
            return b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24
        import random  # ports without os.urandom (the WebAssembly one)

        return random.getrandbits(30) ^ time.ticks_us()

    def read_file(self, name: str) -> bytes:
        """The bytes of a firmware file, b'' if it is not on the board."""
        try:
            with open(name, "rb") as f:
                return f.read()
        except OSError:
            return b""
