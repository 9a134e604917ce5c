// Encode throughput of the npm reference on the same inputs as bench/bench_tokenizer.cpp
// (16 KB documents cut at line ends, best of 3 runs, one thread: Node runs JS on one).
// usage: node bench_ref.js deepseek|qwen3 FILE...   (.jsonl: one JSON string per line)
const fs = require("fs");
const { loadTokenizer } = require("./load");
const tok = loadTokenizer(process.argv[2]);
for (const file of process.argv.slice(3)) {
  let text = fs.readFileSync(file, "utf8");
  if (file.endsWith(".jsonl")) text = text.split("\n").filter((l) => l).map((l) => JSON.parse(l) + "\n").join("");
  const docs = [];
  for (let start = 0; start < text.length;) {
    let end = Math.min(text.length, start + 16384);
    const nl = text.indexOf("\n", end);
    end = nl < 0 ? text.length : nl + 1;
    docs.push(text.slice(start, end));
    start = end;
  }
  const bytes = Buffer.byteLength(text);
  let best = Infinity, ids = 0;
  for (let r = 0; r < 3; ++r) {
    const t0 = process.hrtime.bigint();
    ids = 0;
    for (const d of docs) ids += tok.encode(d, { add_special_tokens: false }).length;
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  console.log(`js ${file}: ${(bytes / 1e6).toFixed(2)} MB ${ids} ids  1 thread ${(bytes / 1e6 / best).toFixed(1)} MB/s`);
}
