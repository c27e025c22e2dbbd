"""A ``machine`` stand-in for MicroPython's WebAssembly port, used by the tests and the demo.

The firmware's hal.py imports this instead of the RP2040's built-in ``machine``; the firmware
files themselves are the ones that go to a board. Every call goes to runner.mjs through the
JS module ``_shim``: the UART is a pty, pins and ADC channels are values the test sets and
reads, and the watchdog is enforced: when it would have fired, the next call into this module
raises SystemExit, which the firmware does not catch (it catches Exception only), and the
runner boots the firmware again with reset_cause() == WDT_RESET, as the RP2040 would.
"""

import binascii

import _shim

PWRON_RESET = 1
WDT_RESET = 3


def _check():
    if _shim.reset_due():
        raise SystemExit(3)


def reset_cause():
    return _shim.reset_cause()


def unique_id():
    return b"WASMSHIM"


def idle():
    _shim.idle()
    _check()


def reset():
    _shim.request_reset()
    raise SystemExit(2)


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, pin_id, mode=-1, pull=-1, value=None):
        self.id = pin_id
        if value is not None:
            self.value(value)

    def value(self, v=None):
        _check()
        if v is None:
            return _shim.pin_read(self.id)
        _shim.pin_write(self.id, 1 if v else 0)
        _check()
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class ADC:
    def __init__(self, ch):
        self.ch = ch if isinstance(ch, int) else ch.id - 26

    def read_u16(self):
        _check()
        v = _shim.adc_read(self.ch)
        _check()
        if v == -1:
            raise OSError(5)  # EIO: the test made this channel fail
        if v == -2:
            raise RuntimeError("peripheral fault (shim)")
        return v


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        self.pin = pin.id
        self._duty = 0

    def freq(self, f=None):
        return 25000 if f is None else None

    def duty_u16(self, v=None):
        _check()
        if v is None:
            return self._duty
        self._duty = v
        _shim.pwm_write(self.pin, v)
        _check()
        return None


class UART:
    def __init__(self, uart_id, baudrate=115200, tx=None, rx=None, rxbuf=256, txbuf=256, **kw):
        self.id = uart_id

    def any(self):
        return _shim.uart_any()

    def read(self, n=-1):
        _check()
        h = _shim.uart_read(n)
        return binascii.unhexlify(h) if h else None

    def write(self, data):
        _check()
        _shim.uart_write(binascii.hexlify(data).decode())
        return len(data)


class WDT:
    def __init__(self, id=0, timeout=5000):
        _shim.wdt_start(timeout)

    def feed(self):
        _check()
        _shim.wdt_feed()
