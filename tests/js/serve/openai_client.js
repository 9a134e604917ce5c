// `whale serve` through the official `openai` npm client: models, chat (non-streaming and
// streaming, reasoning_content, usage), completions, n, stop, tools in and out of the prompt,
// errors (400 with OpenAI's error fields, 401 without the key).
// Usage: node openai_client.js WHALE_BINARY SOURCE_DIR WORK_DIR
"use strict";
const OpenAI = require("openai").default;
const { makeCheckpoint, startServer, checker } = require("./common");

async function main() {
  const [whale, source, work] = process.argv.slice(2);
  const model = makeCheckpoint(whale, source, work);
  const t = checker();
  const server = await startServer(whale, model, ["--api-key", "test-key", "--chat-format", "deepseek-r1"]);
  try {
    const client = new OpenAI({ baseURL: server.url + "/v1", apiKey: "test-key", maxRetries: 0 });
    const models = await client.models.list();
    t.ok(models.data.length === 1 && models.data[0].id === "model", "models.list: " + JSON.stringify(models.data));

    const messages = [{ role: "user", content: "Where does the whale swim?" }];
    const r = await client.chat.completions.create({ model: "model", messages, max_tokens: 16, temperature: 0 });
    const m = r.choices[0].message;
    t.ok(r.object === "chat.completion", "object");
    t.ok(typeof m.content === "string" && m.role === "assistant", "message");
    // R1 format: generation starts inside <think>, so the reasoning is non-empty.
    t.ok(typeof m.reasoning_content === "string" && m.reasoning_content.length > 0, "reasoning_content: " + JSON.stringify(m));
    t.ok(["stop", "length"].includes(r.choices[0].finish_reason), "finish_reason");
    t.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0 &&
      r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, "usage: " + JSON.stringify(r.usage));
    t.ok(r.usage.completion_tokens_details.reasoning_tokens > 0 &&
      r.usage.completion_tokens_details.reasoning_tokens <= r.usage.completion_tokens, "reasoning_tokens");

    // Streaming gives the same text (greedy), ending with a usage chunk.
    const stream = await client.chat.completions.create({ model: "model", messages, max_tokens: 16, temperature: 0,
      stream: true, stream_options: { include_usage: true } });
    let content = "", reasoning = "", finish = null, usage = null, chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        content += c.delta.content || "";
        reasoning += c.delta.reasoning_content || "";
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    t.ok(chunks > 3, "stream chunks: " + chunks);
    t.ok(content === m.content && reasoning === m.reasoning_content, "stream text equals non-streaming text");
    t.ok(finish === r.choices[0].finish_reason, "stream finish_reason");
    t.ok(usage && usage.completion_tokens === r.usage.completion_tokens, "stream usage");

    // n and seed; stop strings cut the text.
    const two = await client.chat.completions.create({ model: "model", messages, max_tokens: 8, n: 2, seed: 11, temperature: 1 });
    t.ok(two.choices.length === 2 && two.choices[1].index === 1, "n=2");
    const full = await client.completions.create({ model: "model", prompt: "The cat", max_tokens: 12, temperature: 0 });
    t.ok(full.object === "text_completion" && typeof full.choices[0].text === "string", "completions");
    const text = full.choices[0].text;
    if (text.length > 4) {
      const stopAt = text.slice(2, 4);
      const cut = await client.completions.create({ model: "model", prompt: "The cat", max_tokens: 12, temperature: 0, stop: [stopAt] });
      t.ok(cut.choices[0].text === text.slice(0, text.indexOf(stopAt)) && cut.choices[0].finish_reason === "stop",
        `stop string ${JSON.stringify(stopAt)}: ${JSON.stringify(cut.choices[0])} vs ${JSON.stringify(text)}`);
    }
    // Streaming completions.
    let streamed = "";
    for await (const chunk of await client.completions.create({ model: "model", prompt: "The cat", max_tokens: 12, temperature: 0, stream: true }))
      streamed += chunk.choices.map((c) => c.text).join("");
    t.ok(streamed === text, "streamed completion equals non-streaming");

    // Tools: accepted, a forced call yields tool_calls (the model writes the arguments).
    const tools = [{ type: "function", function: { name: "get_weather", description: "Weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" } } } } }];
    const forced = await client.chat.completions.create({ model: "model", messages, tools, max_tokens: 8, temperature: 0,
      tool_choice: { type: "function", function: { name: "get_weather" } } });
    const calls = forced.choices[0].message.tool_calls || [];
    t.ok(calls.length === 1 && calls[0].function.name === "get_weather" && calls[0].type === "function" && calls[0].id,
      "forced tool call: " + JSON.stringify(forced.choices[0]));
    t.ok(forced.choices[0].finish_reason === "tool_calls", "finish_reason tool_calls");
    // The conversation continues with the tool's result.
    const followUp = await client.chat.completions.create({ model: "model", tools, max_tokens: 4, messages: [...messages,
      { role: "assistant", content: null, tool_calls: calls },
      { role: "tool", tool_call_id: calls.length ? calls[0].id : "x", content: "sunny" }] });
    t.ok(followUp.choices.length === 1, "tool result accepted");
    let streamedCalls = [];
    for await (const chunk of await client.chat.completions.create({ model: "model", messages, tools, max_tokens: 8,
      temperature: 0, stream: true, tool_choice: { type: "function", function: { name: "get_weather" } } }))
      for (const c of chunk.choices) if (c.delta.tool_calls) streamedCalls.push(...c.delta.tool_calls);
    t.ok(streamedCalls.length === 1 && streamedCalls[0].function.name === "get_weather" &&
      streamedCalls[0].function.arguments === calls[0].function.arguments, "streamed tool call: " + JSON.stringify(streamedCalls));

    // Errors surface as the client's typed errors with OpenAI's fields.
    try {
      await client.chat.completions.create({ model: "model", messages: [{ role: "wizard", content: "x" }] });
      t.ok(false, "unknown role accepted");
    } catch (e) {
      t.ok(e instanceof OpenAI.BadRequestError && e.status === 400 && e.error && e.error.type === "invalid_request_error",
        "unknown role -> 400: " + e);
    }
    try {
      await client.chat.completions.create({ model: "model", messages, max_tokens: 100000 });
      t.ok(false, "max_tokens beyond context accepted");
    } catch (e) {
      t.ok(e.status === 400 && e.code === "context_length_exceeded", "context_length_exceeded: " + e);
    }
    const noKey = new OpenAI({ baseURL: server.url + "/v1", apiKey: "wrong", maxRetries: 0 });
    try {
      await noKey.models.list();
      t.ok(false, "wrong key accepted");
    } catch (e) {
      t.ok(e instanceof OpenAI.AuthenticationError && e.status === 401, "wrong key -> 401: " + e);
    }
  } finally {
    const code = await server.stop();
    t.ok(code === 0, "server exits cleanly on SIGTERM, code " + code);
  }
  process.exit(t.summary());
}

main().catch((e) => { console.error(e); process.exit(1); });
