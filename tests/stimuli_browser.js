// Drives the listening-test page in headless Chromium over the DevTools protocol (pipe transport,
// no npm packages): node tests/stimuli_browser.js CHROMIUM URL HARNESS.js
// Prints the harness's result (JSON) on stdout.
"use strict";
const { spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const [chrome, url, harnessPath] = process.argv.slice(2);
const harness = fs.readFileSync(harnessPath, "utf8");
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "rfmx-chromium-"));
const proc = spawn(
  chrome,
  [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
    "--autoplay-policy=no-user-gesture-required", "--remote-debugging-pipe",
    "--user-data-dir=" + profile, "about:blank",
  ],
  { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] }
);
const toChrome = proc.stdio[3];
const fromChrome = proc.stdio[4];
let next = 0;
let buf = "";
const pending = new Map();
fromChrome.on("data", (d) => {
  buf += d.toString("utf8");
  let i;
  while ((i = buf.indexOf("\0")) >= 0) {
    const msg = JSON.parse(buf.slice(0, i));
    buf = buf.slice(i + 1);
    if (msg.id !== undefined && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    }
  }
});
function send(method, params, sessionId) {
  return new Promise((resolve, reject) => {
    const msg = { id: ++next, method, params: params || {} };
    if (sessionId) msg.sessionId = sessionId;
    pending.set(msg.id, (m) => (m.error ? reject(new Error(method + ": " + JSON.stringify(m.error))) : resolve(m.result)));
    toChrome.write(JSON.stringify(msg) + "\0");
  });
}
function finish(code, text) {
  if (text) (code ? process.stderr : process.stdout).write(text + "\n");
  proc.kill();
  try { fs.rmSync(profile, { recursive: true, force: true }); } catch (e) { /* best effort */ }
  process.exit(code);
}
(async () => {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  await send("Page.navigate", { url }, sessionId);
  for (let i = 0; ; i++) {
    const r = await send("Runtime.evaluate", { expression: "document.readyState + ':' + (typeof window.RFMX_TEST)", returnByValue: true }, sessionId);
    if (r.result.value === "complete:object") break;
    if (i > 200) throw new Error("page did not load: " + r.result.value);
    await new Promise((res) => setTimeout(res, 50));
  }
  const r = await send("Runtime.evaluate", { expression: harness, awaitPromise: true, returnByValue: true }, sessionId);
  if (r.exceptionDetails) throw new Error("harness threw: " + JSON.stringify(r.exceptionDetails));
  finish(0, JSON.stringify(r.result.value));
})().catch((e) => finish(1, String(e && e.stack ? e.stack : e)));
setTimeout(() => finish(1, "timed out"), 90000);
