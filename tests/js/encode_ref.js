// Reference encoder: reads one JSON string per line on stdin, prints one JSON array of ids per
// line, using the npm reference tokenizers (transformers.js port).
// usage: node encode_ref.js deepseek|qwen3|FILE.json [--add-special-tokens] < in.jsonl > out.jsonl
const fs = require("fs");
const { loadTokenizer } = require("./load");
const tok = loadTokenizer(process.argv[2]);
const addSpecial = process.argv.includes("--add-special-tokens");
const lines = fs.readFileSync(0, "utf8").split("\n");
if (lines.length && lines[lines.length - 1] === "") lines.pop();
const out = [];
for (const line of lines) {
  const text = JSON.parse(line);
  out.push(JSON.stringify(Array.from(tok.encode(text, { add_special_tokens: addSpecial }))));
}
fs.writeFileSync(1, out.join("\n") + (out.length ? "\n" : ""));
