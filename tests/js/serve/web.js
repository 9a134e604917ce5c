// The web chat page end to end in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core; no downloaded browser): send a message, watch the answer stream in, expand
// the reasoning, use Stop, and save a screenshot as a test artifact.
// Usage: node web.js WHALE_BINARY SOURCE_DIR WORK_DIR
"use strict";
const path = require("node:path");
const { chromium } = require("playwright-core");
const { makeCheckpoint, startServer, checker } = require("./common");

async function main() {
  const [whale, source, work] = process.argv.slice(2);
  const model = makeCheckpoint(whale, source, work);
  const t = checker();
  // R1 format: the answer starts inside <think>, so there is reasoning to show.
  const server = await startServer(whale, model, ["--chat-format", "deepseek-r1"]);
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(server.url + "/");
    t.ok((await page.title()) === "whale chat", "page title");
    // Sampling settings: a seed and enough tokens to watch the stream grow.
    await page.click("#settings summary");
    await page.fill("#max_tokens", "900");
    await page.fill("#seed", "7");
    await page.fill("#temperature", "1");
    await page.fill("#extra", '{"min_tokens": 900}');  // no early EOS: a long enough stream to watch
    await page.fill("#input", "Where does the whale swim?");
    // Streaming: record the answer's length at every DOM change while it arrives.
    await page.evaluate(() => {
      window.__lengths = [];
      new MutationObserver(() => {
        const m = document.querySelectorAll(".msg.assistant");
        const last = m[m.length - 1];
        if (last) window.__lengths.push(last.querySelector(".reasoning-text").textContent.length +
          last.querySelector(".content").textContent.length);
      }).observe(document.getElementById("messages"), { subtree: true, childList: true, characterData: true });
    });
    await page.click("#send");
    await page.waitForSelector(".msg.assistant.finished", { timeout: 30000 });
    const lengths = new Set(await page.evaluate(() => window.__lengths.filter((n) => n > 0)));
    // The tiny model is fast, so the pieces are few; at least two means text showed before the end.
    t.ok(lengths.size >= 2, "answer arrived in several pieces: " + [...lengths].join(","));
    const reasoning = page.locator(".msg.assistant details.reasoning").last();
    t.ok(await reasoning.isVisible(), "reasoning block shown");
    t.ok(!(await reasoning.evaluate((d) => d.open)), "reasoning starts collapsed");
    await reasoning.locator("summary").click();
    t.ok(await reasoning.evaluate((d) => d.open), "reasoning expands");
    const text = await reasoning.locator(".reasoning-text").textContent();
    t.ok(text.length > 0 && (await reasoning.locator(".reasoning-text").isVisible()), "reasoning text visible");
    t.ok(/tokens/.test(await page.locator(".msg.assistant .meta").last().textContent()), "usage line shown");
    const title = await page.locator("#conversations li.active span").textContent();
    t.ok(title.startsWith("Where does the whale"), "conversation listed: " + title);
    await page.screenshot({ path: path.join(work, "web_chat.png"), fullPage: true });
    // Stop, in a second conversation: a long answer is cut short and the page is usable again.
    await page.click("#new-chat");
    t.ok((await page.locator("#conversations li").count()) === 2, "two conversations");
    await page.fill("#max_tokens", "900");
    await page.fill("#extra", '{"min_tokens": 900}');
    await page.fill("#input", "Tell me more.");
    await page.click("#send");
    // The click happens in the page, in the same poll that sees the first text: the tiny model
    // streams its 900 tokens in about a second, and a separate page.click could land after the
    // stream had ended (the button disabled again).
    await page.waitForFunction(() => {
      const m = document.querySelectorAll(".msg.assistant");
      const stop = document.querySelector("#stop");
      if (m.length !== 1 || m[0].querySelector(".reasoning-text").textContent.length === 0 || stop.disabled) return false;
      stop.click();
      return true;
    }, null, { timeout: 30000, polling: 5 });
    await page.waitForSelector(".msg.assistant.finished", { timeout: 10000 });
    t.ok(/stopped/.test(await page.locator(".msg.assistant .meta").last().textContent()), "stop button stops");
    t.ok(!(await page.locator("#send").isDisabled()), "send enabled again");
    // Both conversations are still there after a reload.
    await page.reload();
    t.ok((await page.locator("#conversations li").count()) === 2, "conversations kept across reloads");
    t.ok(errors.length === 0, "no page errors: " + errors.join("; "));
    console.log("screenshot: " + path.join(work, "web_chat.png"));
  } finally {
    await browser.close();
    await server.stop();
  }
  process.exit(t.summary());
}

main().catch((e) => { console.error(e); process.exit(1); });
