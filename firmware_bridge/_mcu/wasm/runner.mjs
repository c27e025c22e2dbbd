// Runs the MCU firmware on MicroPython's WebAssembly port (npm
// @micropython/micropython-webassembly-pyscript 1.27) under Node.js, as a stand-in board.
//
//   node runner.mjs --mjs PATH/micropython.mjs --fw FIRMWARE_DIR --shim machine.py --uart-fd N
//
// The firmware files (main.py, app.py, hal.py, frames.py) are copied unchanged into the
// interpreter's filesystem root; machine.py (the stand-in for the RP2040's machine module)
// goes to /lib. The shim talks to this file through the JS module `_shim` (the port's JS FFI,
// registerJsModule): UART bytes move between the firmware and fd N (the master side of a pty
// whose slave the host opens with pyserial); Atomics.wait gives machine.idle() a real 1 ms
// sleep instead of a busy loop.
//
// Control (stdin, one JSON object a line, read without blocking whenever the firmware idles):
//   {"op":"adc","ch":0,"value":40000}          raw u16 of an ADC channel
//   {"op":"adc_fail","ch":0,"mode":"oserror"}   mode oserror | raise | stall (+"ms") | null
//   {"op":"pin_in","pin":15,"value":0}          level of an input pin
//   {"op":"reset_on_write","pin":16,"value":1}  reset (as a brown-out) when that write happens
//   {"op":"query","id":7}                       answer with a "state" event
//   {"op":"stop"}
// Events (stdout, one JSON object a line, each with t_ns = CLOCK_MONOTONIC ns, the clock of
// Python's time.monotonic_ns): boot, pin, pwm, wdt_start, wdt_fired, reset, crash, state, exit.

import fs from "fs";
import path from "path";
import { pathToFileURL } from "url";
import { Worker } from "worker_threads";

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, "")] = argv[i + 1];
const uartFd = parseInt(opt["uart-fd"], 10);
const FW_FILES = ["main.py", "app.py", "hal.py", "frames.py"];

const { loadMicroPython } = await import(pathToFileURL(opt.mjs).href);

const sleeper = new Int32Array(new SharedArrayBuffer(4));
const sleepMs = (ms) => Atomics.wait(sleeper, 0, 0, ms);
const nowNs = () => process.hrtime.bigint();
const nowMs = () => Number(nowNs() / 1000000n);

function emit(ev) {
  ev.t_ns = String(nowNs());
  fs.writeSync(1, JSON.stringify(ev) + "\n");
}

// The watchdog's clock runs in a thread of its own, as the RP2040's does: it sees the firing
// on time even while the firmware is stuck in a call (the reset itself can only happen once
// that call returns, at the next call into the shim). Shared: [0] timeout ms (0 = stopped),
// [1] last feed (ms since T0), [2] fired (the first side to set it reports it).
const T0 = nowMs();
const wd = new Int32Array(new SharedArrayBuffer(12));
const watchdog = new Worker(`
  const { workerData } = require("worker_threads");
  const fs = require("fs");
  const wd = new Int32Array(workerData.sab);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    Atomics.wait(pause, 0, 0, 2);
    const timeout = Atomics.load(wd, 0);
    if (!timeout) continue;
    const since = Number(process.hrtime.bigint() / 1000000n) - workerData.t0 - Atomics.load(wd, 1);
    if (since > timeout && Atomics.compareExchange(wd, 2, 0, 1) === 0) {
      fs.writeSync(1, JSON.stringify({ ev: "wdt_fired", since_feed_ms: since, timeout_ms: timeout,
        by: "watchdog thread", t_ns: String(process.hrtime.bigint()) }) + "\\n");
    }
  }`, { eval: true, workerData: { sab: wd.buffer, t0: T0 } });
watchdog.on("error", (e) => process.stderr.write("watchdog thread failed: " + e + "\n"));
watchdog.unref();

const PWRON_RESET = 1;
const WDT_RESET = 3;

const pins = new Map(); // output pin -> last written level
const inputs = new Map(); // input pin -> level (pull-up: 1 until set)
const pwm = new Map();
const adc = new Map([[0, 20000], [4, 14000]]);
const adcFail = new Map();
let resetOnWrite = null;
let wdt = null;
let pendingReset = null; // {cause, why}
let stopping = false;
let boots = 0;
let resetCause = PWRON_RESET;
let rx = [];
let rxLen = 0;
let txDropped = 0;
const tmp = Buffer.alloc(4096);

function pollUart() {
  for (;;) {
    let n;
    try {
      n = fs.readSync(uartFd, tmp, 0, tmp.length, null);
    } catch (e) {
      if (e.code === "EAGAIN" || e.code === "EWOULDBLOCK" || e.code === "EIO") return;
      throw e;
    }
    if (n <= 0) return;
    rx.push(Buffer.from(tmp.subarray(0, n)));
    rxLen += n;
  }
}

let ctlBuf = "";
let lastCtl = 0;
function processControl() {
  const t = nowMs();
  if (t === lastCtl) return;
  lastCtl = t;
  for (;;) {
    let n;
    try {
      n = fs.readSync(0, tmp, 0, tmp.length, null);
    } catch (e) {
      if (e.code === "EAGAIN" || e.code === "EWOULDBLOCK") break;
      throw e;
    }
    if (n <= 0) {
      stopping = true; // stdin closed: the owner is gone
      break;
    }
    ctlBuf += tmp.subarray(0, n).toString("utf8");
  }
  let nl;
  while ((nl = ctlBuf.indexOf("\n")) >= 0) {
    const line = ctlBuf.slice(0, nl);
    ctlBuf = ctlBuf.slice(nl + 1);
    if (line.trim()) control(JSON.parse(line));
  }
  if (stopping && !pendingReset) pendingReset = { cause: 0, why: "stop" };
}

function control(c) {
  switch (c.op) {
    case "adc": adc.set(c.ch, c.value); break;
    case "adc_fail":
      if (c.mode) adcFail.set(c.ch, { mode: c.mode, ms: c.ms || 0 });
      else adcFail.delete(c.ch);
      break;
    case "pin_in": inputs.set(c.pin, c.value); break;
    case "reset_on_write": resetOnWrite = { pin: c.pin, value: c.value }; break;
    case "query":
      emit({
        ev: "state", id: c.id, boots, pins: Object.fromEntries(pins), pwm: Object.fromEntries(pwm),
        wdt_timeout: wdt ? wdt.timeout : null, feeds: wdt ? wdt.feeds : 0,
        since_feed_ms: wdt ? nowMs() - wdt.lastFeed : null, tx_dropped: txDropped,
      });
      break;
    case "stop": stopping = true; break;
    default: emit({ ev: "error", error: "unknown op " + c.op });
  }
}

function wdtExpired() {
  if (!wdt || pendingReset) return false;
  const since = nowMs() - wdt.lastFeed;
  if (since <= wdt.timeout && !Atomics.load(wd, 2)) return false;
  if (Atomics.compareExchange(wd, 2, 0, 1) === 0) {
    emit({ ev: "wdt_fired", since_feed_ms: since, timeout_ms: wdt.timeout, feeds: wdt.feeds });
  }
  pendingReset = { cause: WDT_RESET, why: "watchdog" };
  return true;
}

const shim = {
  reset_due: () => { processControl(); wdtExpired(); return pendingReset !== null; },
  reset_cause: () => resetCause,
  request_reset: () => { pendingReset = { cause: PWRON_RESET, why: "machine.reset()" }; },
  idle: () => {
    pollUart();
    if (rxLen === 0) sleepMs(1);
    processControl();
  },
  pin_read: (id) => (inputs.has(id) ? inputs.get(id) : 1),
  pin_write: (id, v) => {
    if (pins.get(id) !== v) {
      pins.set(id, v);
      emit({ ev: "pin", pin: id, value: v });
    }
    if (resetOnWrite && resetOnWrite.pin === id && resetOnWrite.value === v) {
      resetOnWrite = null;
      pendingReset = { cause: PWRON_RESET, why: "armed reset on pin " + id };
    }
  },
  pwm_write: (id, duty) => {
    if (pwm.get(id) !== duty) {
      pwm.set(id, duty);
      emit({ ev: "pwm", pin: id, duty });
    }
  },
  adc_read: (ch) => {
    const f = adcFail.get(ch);
    if (f) {
      if (f.mode === "oserror") return -1;
      if (f.mode === "raise") return -2;
      if (f.mode === "stall") {
        adcFail.delete(ch);
        emit({ ev: "stall", ch, ms: f.ms });
        sleepMs(f.ms);
      }
    }
    return adc.has(ch) ? adc.get(ch) : 0;
  },
  uart_any: () => { pollUart(); processControl(); return rxLen; },
  uart_read: (n) => {
    pollUart();
    if (rxLen === 0) return "";
    let all = Buffer.concat(rx);
    const take = n < 0 || n >= all.length ? all.length : n;
    const out = all.subarray(0, take);
    rx = take < all.length ? [Buffer.from(all.subarray(take))] : [];
    rxLen = all.length - take;
    return out.toString("hex");
  },
  uart_write: (hex) => {
    const data = Buffer.from(hex, "hex");
    try {
      fs.writeSync(uartFd, data);
    } catch (e) {
      if (e.code === "EAGAIN" || e.code === "EWOULDBLOCK" || e.code === "EIO") txDropped += data.length;
      else throw e;
    }
  },
  wdt_start: (timeout) => {
    wdt = { timeout, lastFeed: nowMs(), feeds: 0 };
    Atomics.store(wd, 1, wdt.lastFeed - T0);
    Atomics.store(wd, 0, timeout);
    emit({ ev: "wdt_start", timeout_ms: timeout });
  },
  wdt_feed: () => {
    wdt.lastFeed = nowMs();
    wdt.feeds += 1;
    Atomics.store(wd, 1, wdt.lastFeed - T0);
  },
};

const sources = FW_FILES.map((name) => [name, fs.readFileSync(path.join(opt.fw, name))]);
const shimSource = fs.readFileSync(opt.shim);

while (!stopping) {
  boots += 1;
  wdt = null;
  Atomics.store(wd, 0, 0); // a reset stops the watchdog until the firmware starts it again
  Atomics.store(wd, 2, 0);
  pendingReset = null;
  rx = [];
  rxLen = 0;
  pins.clear();
  pwm.clear();
  emit({ ev: "boot", n: boots, reset_cause: resetCause });
  const mp = await loadMicroPython({
    heapsize: 192 * 1024, // about what an RP2040 leaves to MicroPython
    linebuffer: true,
    stdout: (line) => process.stderr.write("[mcu] " + line + "\n"),
    stderr: (line) => process.stderr.write("[mcu] " + line + "\n"),
  });
  mp.registerJsModule("_shim", shim);
  for (const [name, data] of sources) mp.FS.writeFile("/" + name, data);
  try { mp.FS.mkdir("/lib"); } catch (e) { /* exists */ }
  mp.FS.writeFile("/lib/machine.py", shimSource);
  try {
    mp.runPython(sources[0][1].toString("utf8"));
    emit({ ev: "crash", error: "main.py returned" });
  } catch (e) {
    if (!(e.name === "PythonError" && e.type === "SystemExit")) {
      emit({ ev: "crash", error: String(e.message || e) });
      // a board with an uncaught exception sits at the REPL until its watchdog fires
      while (!stopping && wdt && !wdtExpired()) { sleepMs(2); processControl(); }
      if (!pendingReset) {
        while (!stopping) { sleepMs(5); processControl(); }
      }
    }
  }
  if (stopping || (pendingReset && pendingReset.why === "stop")) break;
  emit({ ev: "reset", why: pendingReset.why, cause: pendingReset.cause });
  resetCause = pendingReset.cause;
}
emit({ ev: "exit" });
process.exit(0);
