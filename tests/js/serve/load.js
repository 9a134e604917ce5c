// Load test on loopback: 32 concurrent clients send 500 requests mixing streaming,
// non-streaming and streams cancelled mid-way. Every request must complete (200) or be cleanly
// rejected (4xx with an OpenAI error body); no 5xx, no crash; afterwards nothing is left running
// or queued, no KV cache is held by sequences, and the server's RSS is within 10% of what it was
// after a warm-up of the same mix.
// Usage: node load.js WHALE_BINARY SOURCE_DIR WORK_DIR
"use strict";
const { makeCheckpoint, startServer, checker } = require("./common");

const CLIENTS = 32, REQUESTS = 500, WARMUP = 120;

async function one(url, i, stats) {
  const kind = i % 5 === 4 ? "cancel" : i % 2 ? "stream" : "plain";
  const body = {
    messages: [{ role: "user", content: `Question ${i % 97}: where does the whale ${"swim ".repeat(i % 7)}?` }],
    max_tokens: kind === "cancel" ? 64 : 4 + (i % 5), temperature: 0.8, seed: i, stream: kind !== "plain",
  };
  if (i % 50 === 7) body.temperature = 5;  // invalid: must be a clean 400
  const controller = new AbortController();
  let res;
  try {
    res = await fetch(url + "/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: controller.signal });
  } catch (e) {
    stats.networkErrors.push(String(e));
    return;
  }
  stats.status[res.status] = (stats.status[res.status] || 0) + 1;
  if (res.status !== 200) {
    const j = await res.json().catch(() => null);
    if (!(res.status >= 400 && res.status < 500 && j && j.error && j.error.message)) stats.unclean.push(res.status);
    return;
  }
  if (kind === "plain") {
    const j = await res.json();
    if (!j.choices || !j.usage) stats.unclean.push("bad body");
    else stats.completed++;
    return;
  }
  const reader = res.body.getReader();
  let text = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
      if (kind === "cancel" && text.includes('"content"')) {
        controller.abort();
        stats.cancelled++;
        return;
      }
    }
  } catch (e) {
    if (kind === "cancel") { stats.cancelled++; return; }
    stats.networkErrors.push(String(e));
    return;
  }
  if (text.trimEnd().endsWith("data: [DONE]")) stats.completed++;
  else if (kind === "cancel") stats.completed++;  // finished before the cancel point
  else stats.unclean.push("stream without [DONE]");
}

async function run(url, total, offset) {
  const stats = { status: {}, completed: 0, cancelled: 0, unclean: [], networkErrors: [] };
  let next = 0;
  await Promise.all(Array.from({ length: CLIENTS }, async () => {
    while (next < total) await one(url, offset + next++, stats);
  }));
  return stats;
}

async function metrics(url) {
  const text = await (await fetch(url + "/metrics")).text();
  const get = (name) => Number((text.match(new RegExp("^" + name + " (\\S+)$", "m")) || [0, NaN])[1]);
  return { running: get("whale_running_sequences"), queued: get("whale_queue_depth"),
    active: get("whale_kv_cache_active_tokens"), cancelled: get("whale_sequences_cancelled_total") };
}

async function settle(url) {
  for (let i = 0; i < 100; i++) {
    const m = await metrics(url);
    if (m.running === 0 && m.queued === 0 && m.active === 0) return m;
    await new Promise((r) => setTimeout(r, 100));
  }
  return metrics(url);
}

async function main() {
  const [whale, source, work] = process.argv.slice(2);
  const model = makeCheckpoint(whale, source, work);
  const t = checker();
  // A budget that holds only some of 32 requests at once, so requests also queue.
  const server = await startServer(whale, model, ["--kv-budget-tokens", "1500", "--max-batch", "16"]);
  try {
    const warm = await run(server.url, WARMUP, 100000);
    t.ok(warm.unclean.length === 0 && warm.networkErrors.length === 0, "warm-up clean");
    await settle(server.url);
    const before = server.rssKiB();
    const t0 = Date.now();
    const s = await run(server.url, REQUESTS, 0);
    const secs = (Date.now() - t0) / 1000;
    console.log(`${REQUESTS} requests in ${secs.toFixed(1)} s: status ${JSON.stringify(s.status)}, completed ${s.completed}, ` +
      `cancelled ${s.cancelled}`);
    t.ok(s.unclean.length === 0, "no unclean responses: " + JSON.stringify(s.unclean.slice(0, 5)));
    t.ok(s.networkErrors.length === 0, "no network errors: " + JSON.stringify(s.networkErrors.slice(0, 5)));
    t.ok(!Object.keys(s.status).some((k) => Number(k) >= 500), "no 5xx");
    t.ok(s.completed + s.cancelled + (s.status[400] || 0) === REQUESTS, "every request accounted for");
    t.ok(s.cancelled > 50, "cancellations happened: " + s.cancelled);
    t.ok((s.status[400] || 0) === 10, "invalid requests rejected with 400: " + s.status[400]);
    const m = await settle(server.url);
    t.ok(m.running === 0 && m.queued === 0 && m.active === 0, "nothing left running or holding cache: " + JSON.stringify(m));
    t.ok(m.cancelled >= s.cancelled * 0.5, `server saw the cancellations (${m.cancelled} of ${s.cancelled})`);
    const health = await fetch(server.url + "/health");
    t.ok(health.status === 200, "server alive");
    const after = server.rssKiB();
    console.log(`RSS before ${before} KiB, after ${after} KiB`);
    t.ok(after <= before * 1.1 && after >= before * 0.9, `RSS within 10%: ${before} -> ${after} KiB`);
  } finally {
    const code = await server.stop();
    t.ok(code === 0, "clean exit " + code);
  }
  process.exit(t.summary());
}

main().catch((e) => { console.error(e); process.exit(1); });
