"""The MCU firmware's main loop (MicroPython 1.27 on an RP2040; see hal.py for the board).

Each iteration, in order: take the host's bytes (frames.Deframer; a corrupt, oversized or
out-of-sequence frame is counted and never acted on), check the host's heartbeats, sample and
report the points, send STATUS when due or changed; then feed the watchdog, but only if
every stage finished without an exception and within LOOP_BUDGET_MS; then wait for UART bytes
or the next deadline.

Safe state, in layers:

    no heartbeat since boot    outputs at their safe values (hal.Board does that first)
    MISSED_MAX periods missed  outputs safe, state SAFE: 300 ms with hal's timings, far inside
                               the watchdog's 1500 ms; the next heartbeat makes it RUN again
                               (outputs stay safe until commanded)
    safe_state command         outputs safe, LATCHED until a resume command
    a stage raised             outputs safe, state FAULT, the watchdog is never fed again:
                               it resets the MCU within WDT_MS
    the loop hangs             nothing feeds the watchdog: reset within WDT_MS, and the
                               reset brings the outputs up safe

Commands (COMMAND frame: name + params; every one gets exactly one ACK):

    set_output {point: value, ...}   all checked first, then all driven; refused unless RUN
    safe_state {}                    latch the safe state
    resume {}                        leave the latched safe state
    ping {}                          ACK only
"""

import hashlib

import frames
import hal

FW_VERSION = "1.0.0"
FW_FILES = ("main.py", "app.py", "hal.py", "frames.py")


def firmware_hash(board: hal.Board) -> bytes:
    """First 8 bytes of SHA-256 over FW_FILES (each as .py, else .mpy, else nothing)."""
    h = hashlib.sha256()
    for name in FW_FILES:
        data = board.read_file(name)
        if not data:
            data = board.read_file(name[:-3] + ".mpy")
        h.update(data)
    return h.digest()[:8]


class Firmware:
    def __init__(self, board: hal.Board) -> None:
        self.b = board
        self.points = board.points()
        self.deframer = frames.Deframer()
        self.counters: dict = {}
        for name in frames.COUNTERS:
            self.counters[name] = 0
        self.tx_seq = 0
        self.rx = frames.Receiver()  # no session until the host's SYNC
        self.state = frames.STATE_BOOT_SAFE
        self.last_hb = 0
        self.missed = 0
        self.healthy = True
        self.status_due = True
        now = board.ticks_ms()
        self.next_sample = now
        self.next_status = now
        self.boot_id = board.boot_id()
        self.reset_cause = board.reset_cause()
        self.fw_hash = firmware_hash(board)

    # -- output ----------------------------------------------------------------------------

    def send(self, ftype: int, body: bytes) -> None:
        self.b.uart_write(frames.encode(ftype, self.tx_seq, body))
        self.tx_seq = (self.tx_seq + 1) & 0xFFFF

    def hello(self, reason: int) -> None:
        self.send(frames.T_HELLO, frames.hello_body(
            reason, self.boot_id, self.fw_hash, FW_VERSION, self.reset_cause,
            hal.HEARTBEAT_MS, hal.MISSED_MAX, self.points))

    def ack(self, seq: int, status: int, detail: str) -> None:
        self.send(frames.T_ACK, frames.ack_body(seq, status, self.b.ticks_ms(), detail))

    def set_state(self, state: int) -> None:
        if state != self.state:
            self.state = state
            self.status_due = True
            self.b.led(state == frames.STATE_RUN)

    def go_safe(self, state: int) -> None:
        self.b.safe_outputs()
        if self.state in (frames.STATE_RUN, frames.STATE_BOOT_SAFE):
            self.counters["safe_entries"] += 1
        self.set_state(state)

    # -- stages ----------------------------------------------------------------------------

    def receive(self, now: int) -> None:
        data = self.b.uart_read()
        if not data:
            return
        for frame in self.deframer.feed(data):
            self.handle(frame, now)

    def handle(self, frame: frames.Frame, now: int) -> None:
        c = self.counters
        if frame.ftype == frames.T_SYNC:
            self.rx.restart(frame.seq)
            c["frames_ok"] += 1
            self.hello(frames.HELLO_ASKED)
            self.status_due = True
            return
        if not self.rx.take(frame.seq, c):  # before any SYNC, every frame is refused
            return
        if frame.ftype == frames.T_HEARTBEAT:
            c["heartbeats"] += 1
            self.last_hb = now
            self.missed = 0
            if self.state in (frames.STATE_BOOT_SAFE, frames.STATE_SAFE):
                self.set_state(frames.STATE_RUN)
        elif frame.ftype == frames.T_COMMAND:
            try:
                name, params = frames.read_command(frame.body)
            except frames.BodyError as e:
                c["bad_bodies"] += 1
                c["commands_rejected"] += 1
                self.ack(frame.seq, frames.ACK_REJECTED, f"bad command body: {e}")
                return
            status, detail = self.command(name, params)
            c["commands_done" if status == frames.ACK_DONE else "commands_rejected"] += 1
            self.ack(frame.seq, status, detail)
        else:
            c["unknown_types"] += 1

    def command(self, name: str, params: list) -> tuple:
        if name == "set_output":
            writes = []
            for key, value in params:
                i = self.output_index(key)
                if i < 0:
                    return frames.ACK_REJECTED, f"no output point {key!r}"
                if isinstance(value, str):
                    return frames.ACK_REJECTED, f"{key} needs a number"
                why = self.b.check(i, value)
                if why:
                    return frames.ACK_REJECTED, why
                writes.append((i, value))
            if not writes:
                return frames.ACK_REJECTED, "set_output needs at least one point"
            if self.state != frames.STATE_RUN:
                return frames.ACK_SAFE, f"outputs held safe ({frames.STATE_NAMES[self.state]})"
            for i, value in writes:
                self.b.write(i, value)
            return frames.ACK_DONE, "set"
        if name == "safe_state":
            self.go_safe(frames.STATE_LATCHED)
            return frames.ACK_DONE, "latched safe"
        if name == "resume":
            if self.state != frames.STATE_LATCHED:
                return frames.ACK_DONE, "not latched"
            self.set_state(frames.STATE_RUN if self.missed < hal.MISSED_MAX else frames.STATE_SAFE)
            return frames.ACK_DONE, "resumed"
        if name == "ping":
            return frames.ACK_DONE, "pong"
        return frames.ACK_REJECTED, f"unknown command {name!r}"

    def output_index(self, name: str) -> int:
        for i in range(len(self.points)):
            if self.points[i][0] == name and self.b.is_output(i):
                return i
        return -1

    def check_host(self, now: int) -> None:
        if self.state == frames.STATE_BOOT_SAFE:
            return
        self.missed = self.b.ticks_diff(now, self.last_hb) // hal.HEARTBEAT_MS
        if self.state == frames.STATE_RUN and self.missed >= hal.MISSED_MAX:
            self.go_safe(frames.STATE_SAFE)

    def sample(self, now: int) -> None:
        if self.b.ticks_diff(now, self.next_sample) < 0:
            return
        values = []
        for i in range(len(self.points)):
            try:
                values.append((i, self.b.read(i)))
            except OSError:
                self.counters["read_errors"] += 1
        self.send(frames.T_READINGS, frames.readings_body(now, values))
        self.next_sample += hal.SAMPLE_MS
        if self.b.ticks_diff(now, self.next_sample) >= 0:  # fell behind: do not burst
            self.next_sample = now + hal.SAMPLE_MS

    def report(self, now: int) -> None:
        if not self.status_due and self.b.ticks_diff(now, self.next_status) < 0:
            return
        self.status_due = False
        self.next_status = now + hal.STATUS_MS
        d = self.deframer
        c = self.counters
        for kind in d.counts:
            c[kind] = d.counts[kind]
        counts = [c[name] for name in frames.COUNTERS]
        self.send(frames.T_STATUS, frames.status_body(self.state, self.missed, counts))

    # -- the loop --------------------------------------------------------------------------

    def step(self) -> None:
        """One iteration; feeds the watchdog only if it was healthy."""
        b = self.b
        t0 = b.ticks_ms()
        ok = True
        for stage in (self.receive, self.check_host, self.sample, self.report):
            try:
                stage(b.ticks_ms())
            except Exception:  # noqa: BLE001 - any failure makes the loop unhealthy
                self.counters["stage_errors"] += 1
                ok = False
        if not ok and self.healthy:
            self.healthy = False
            self.go_safe(frames.STATE_FAULT)
            try:
                self.report(b.ticks_ms())
            except Exception:  # noqa: BLE001 - the watchdog resets us anyway
                pass
        if b.ticks_diff(b.ticks_ms(), t0) > hal.LOOP_BUDGET_MS:
            self.counters["loop_overruns"] += 1
        elif self.healthy:
            b.watchdog_feed()
        now = b.ticks_ms()
        wake = min(b.ticks_diff(self.next_sample, now), b.ticks_diff(self.next_status, now))
        if self.state == frames.STATE_RUN:
            wake = min(wake, b.ticks_diff(self.last_hb + hal.HEARTBEAT_MS * hal.MISSED_MAX, now))
        if wake > 0:
            b.wait(wake)

    def run(self) -> None:
        self.b.watchdog_start()
        self.hello(frames.HELLO_BOOT)
        while True:
            self.step()


def main() -> None:
    Firmware(hal.Board()).run()
