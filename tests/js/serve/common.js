// Shared by the serve integration tests: a tiny random checkpoint with a trained tokenizer, and
// `whale serve` started on a free loopback port.
"use strict";
const { execFileSync, spawn } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

// configs/tiny-v3.json with a 400-id tokenizer trained on a few sentences (vocab 512 >= 400).
function makeCheckpoint(whale, source, dir) {
  const model = path.join(dir, "model");
  if (fs.existsSync(path.join(model, "tokenizer.json"))) return model;
  fs.mkdirSync(dir, { recursive: true });
  const text = path.join(dir, "text.txt");
  fs.writeFileSync(text, "The cat sat on the mat. A whale swims in the deep sea, singing to the moon. ".repeat(40) +
    "<think>\nThe user asks something.\n</think>\n\nHere is the answer.\n".repeat(20));
  const env = { ...process.env, OMP_NUM_THREADS: "1" };
  execFileSync(whale, ["tokenizer", "train", "--vocab-size", "400", "--out", path.join(dir, "tok", "tokenizer.json"), text],
    { env, stdio: ["ignore", "ignore", "inherit"] });
  execFileSync(whale, ["init", "--config", path.join(source, "configs/tiny-v3.json"), "--seed", "1", "--std", "0.05",
    "--tokenizer", path.join(dir, "tok", "tokenizer.json"), "--out", model], { env, stdio: ["ignore", "ignore", "inherit"] });
  return model;
}

// Resolves to { url, port, proc, stop(), rssKiB() } once the server prints its address.
function startServer(whale, model, args = [], env = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(whale, ["serve", "--model", model, "--port", "0", ...args],
      { env: { ...process.env, OMP_NUM_THREADS: "2", ...env }, stdio: ["ignore", "inherit", "pipe"] });
    let err = "";
    const timer = setTimeout(() => { proc.kill("SIGKILL"); reject(new Error("server did not start: " + err)); }, 30000);
    proc.stderr.on("data", (d) => {
      err += d.toString();
      process.stderr.write(d);
      const m = err.match(/on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m && timer) {
        clearTimeout(timer);
        const port = Number(m[1]);
        resolve({
          url: `http://127.0.0.1:${port}`, port, proc,
          stop: () => new Promise((r) => { if (proc.exitCode !== null) return r(proc.exitCode); proc.on("exit", (code) => r(code)); proc.kill("SIGTERM"); }),
          rssKiB: () => Number((fs.readFileSync(`/proc/${proc.pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/) || [0, 0])[1]),
        });
      }
    });
    proc.on("exit", (code) => { clearTimeout(timer); reject(new Error(`server exited with ${code}: ${err}`)); });
  });
}

// Plain assertion helper that counts, so each script ends with "N passed, N failed".
function checker() {
  let passed = 0, failed = 0;
  return {
    ok(cond, what) { if (cond) passed++; else { failed++; console.error("FAIL: " + what); } },
    summary() { console.log(`${passed} passed, ${failed} failed`); return failed === 0 ? 0 : 1; },
  };
}

module.exports = { makeCheckpoint, startServer, checker };
