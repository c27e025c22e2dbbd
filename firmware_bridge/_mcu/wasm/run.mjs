// Run one MicroPython script on the WebAssembly port and exit (for checks of the shared codec):
//   node run.mjs --mjs PATH/micropython.mjs --job JOB.json
// JOB.json: {"files": {"frames.py": "..."}, "code": "..."}; the script's print() goes to stdout,
// an uncaught exception to stderr with exit code 1.
import fs from "fs";
import { pathToFileURL } from "url";

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, "")] = argv[i + 1];
const { loadMicroPython } = await import(pathToFileURL(opt.mjs).href);
const job = JSON.parse(fs.readFileSync(opt.job, "utf8"));
const out = [];
const mp = await loadMicroPython({
  heapsize: 4 * 1024 * 1024,
  linebuffer: true,
  stdout: (line) => out.push(line),
  stderr: (line) => process.stderr.write(line + "\n"),
});
for (const [name, text] of Object.entries(job.files)) mp.FS.writeFile("/" + name, text);
let rc = 0;
try {
  mp.runPython(job.code);
} catch (e) {
  process.stderr.write(String(e.message || e) + "\n");
  rc = 1;
}
fs.writeSync(1, out.join("\n") + (out.length ? "\n" : ""));
process.exit(rc);
