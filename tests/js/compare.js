// Checks whale's tokenizer against the npm reference, end to end through the CLI:
//  1. ids of every line of tests/tokenizer/data/corpus.jsonl, for DeepSeek-V3 and Qwen3,
//     without and (on the first 300 lines) with special tokens added;
//  2. decode(encode(x)) == x for every line, and whale's decode == the reference's decode;
//  3. invalid UTF-8 files: whale's ids == the reference's ids for the same bytes read by Node;
//  4. a tokenizer trained by `whale tokenizer train` gives the same ids in both;
//  5. chat rendering for deepseek-v3 and deepseek-r1 == render_chat.js.
// usage: node compare.js WHALE_BINARY SOURCE_DIR WORK_DIR
const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");
const { loadTokenizer } = require("./load");

const [whale, sourceDir, workDir] = process.argv.slice(2);
if (!workDir) throw new Error("usage: node compare.js WHALE_BINARY SOURCE_DIR WORK_DIR");
fs.mkdirSync(workDir, { recursive: true });
const corpusPath = path.join(sourceDir, "tests/tokenizer/data/corpus.jsonl");
const texts = fs.readFileSync(corpusPath, "utf8").split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
let failures = 0;
const fail = (msg) => { ++failures; console.log("FAIL " + msg); };
const run = (args, input) =>
  execFileSync(whale, args, { input, maxBuffer: 1 << 30, encoding: "utf8" });
const jsonl = (items) => items.map((x) => JSON.stringify(x)).join("\n") + "\n";
const parseLines = (s) => s.split("\n").filter((l) => l.length).map((l) => JSON.parse(l));

function compareIds(label, tokFile, ref, lines, extra = []) {
  const expected = lines.map((t) => Array.from(ref.encode(t, { add_special_tokens: extra.length > 0 })));
  const got = parseLines(run(["tokenizer", "encode", "--jsonl", "--tokenizer", tokFile, ...extra], jsonl(lines)));
  let same = 0, ids = 0, bytes = 0;
  for (let i = 0; i < lines.length; ++i) {
    bytes += Buffer.byteLength(lines[i]);
    ids += expected[i].length;
    if (JSON.stringify(expected[i]) === JSON.stringify(got[i])) { ++same; continue; }
    if (same + 3 > i) fail(`${label}: line ${i + 1} ${JSON.stringify(lines[i]).slice(0, 120)}\n  ref   ${JSON.stringify(expected[i]).slice(0, 200)}\n  whale ${JSON.stringify(got[i]).slice(0, 200)}`);
  }
  console.log(`${label}: ${same}/${lines.length} lines identical (${ids} ids, ${(bytes / 1e6).toFixed(2)} MB)`);
  if (same !== lines.length) fail(`${label}: ${lines.length - same} lines differ`);
  return got;
}

// decode(encode(x)) gives x back exactly, or NFC(x) for a tokenizer that normalizes (Qwen3).
function compareDecode(label, tokFile, ref, ids, lines, form = null) {
  const got = parseLines(run(["tokenizer", "decode", "--jsonl", "--tokenizer", tokFile], jsonl(ids)));
  let roundtrip = 0, agree = 0;
  for (let i = 0; i < lines.length; ++i) {
    if (got[i] === (form ? lines[i].normalize(form) : lines[i])) ++roundtrip;
    if (got[i] === (ids[i].length ? ref.decode(ids[i], { skip_special_tokens: false }) : "")) ++agree;
  }
  console.log(`${label}: decode(encode(x)) == ${form ? form + "(x)" : "x"} on ${roundtrip}/${lines.length}; decode == reference on ${agree}/${lines.length}`);
  if (roundtrip !== lines.length || agree !== lines.length) fail(`${label}: decode mismatch`);
}

// Byte strings that are not valid UTF-8, mixed with text.
function invalidUtf8Cases() {
  const pieces = [[0xff], [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80],
    [0xe4, 0xbd], [0xf0, 0x9f, 0x98], [0x80], [0xbf, 0xbf], [0xfe, 0xfe, 0xff], [0xc3], [0xf8, 0x88, 0x80, 0x80, 0x80]];
  const words = ["Hello", " 你好", "  ", "\n", "123456", "<｜User｜>", "é", "😀"];
  let seed = 7;
  const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  const cases = pieces.map((p) => Buffer.from(p));
  for (let i = 0; i < 60; ++i) {
    const parts = [];
    for (let k = 0; k < 2 + rnd(6); ++k)
      parts.push(rnd(2) ? Buffer.from(pieces[rnd(pieces.length)]) : Buffer.from(words[rnd(words.length)]));
    cases.push(Buffer.concat(parts));
  }
  return cases;
}

function compareInvalid(label, tokFile, ref) {
  const dir = path.join(workDir, "invalid_utf8");
  fs.mkdirSync(dir, { recursive: true });
  const cases = invalidUtf8Cases();
  const files = cases.map((b, i) => { const f = path.join(dir, `${i}.bin`); fs.writeFileSync(f, b); return f; });
  const got = run(["tokenizer", "encode", "--tokenizer", tokFile, ...files]).split("\n");
  let same = 0;
  cases.forEach((b, i) => {
    const expected = Array.from(ref.encode(b.toString("utf8"), { add_special_tokens: false })).join(" ");
    if (got[i] === expected) ++same;
    else if (same + 3 > i) fail(`${label}: invalid UTF-8 case ${i} [${[...b].join(",")}]\n  ref   ${expected}\n  whale ${got[i]}`);
  });
  console.log(`${label}: invalid UTF-8 ${same}/${cases.length} identical`);
  if (same !== cases.length) fail(`${label}: invalid UTF-8 mismatch`);
}

for (const [name, file, form] of [["deepseek", "data/tokenizers/deepseek_v3/tokenizer.json", null],
  ["qwen3", "data/tokenizers/qwen3/tokenizer.json", "NFC"]]) {
  const ref = loadTokenizer(name);
  const tokFile = path.join(sourceDir, file);
  const ids = compareIds(`${name} ids`, tokFile, ref, texts);
  compareIds(`${name} ids with special tokens`, tokFile, ref, texts.slice(0, 300), ["--add-special-tokens"]);
  compareDecode(`${name}`, tokFile, ref, ids, texts, form);
  compareInvalid(name, tokFile, ref);
}

// A tokenizer trained by whale on the corpus text itself.
const trainText = path.join(workDir, "train.txt");
const trained = path.join(workDir, "trained_tokenizer.json");
fs.writeFileSync(trainText, texts.join("\n"));
execFileSync(whale, ["tokenizer", "train", "--vocab-size", "3000", "--out", trained, trainText], { stdio: "ignore" });
const trainedRef = loadTokenizer(trained);
const trainedIds = compareIds("trained ids", trained, trainedRef, texts);
compareDecode("trained", trained, trainedRef, trainedIds, texts);

const conversations = path.join(sourceDir, "tests/tokenizer/data/conversations.jsonl");
for (const format of ["deepseek-v3", "deepseek-r1"]) {
  const expected = execFileSync("node", [path.join(__dirname, "render_chat.js"), format], { input: fs.readFileSync(conversations), encoding: "utf8" });
  const got = run(["tokenizer", "chat", "--format", format, conversations]);
  const e = expected.split("\n"), g = got.split("\n");
  let same = 0;
  for (let i = 0; i < e.length; ++i) if (e[i] === g[i]) ++same; else if (e[i]) fail(`${format} conversation line ${i + 1}\n  ref   ${e[i]}\n  whale ${g[i]}`);
  console.log(`${format} chat: ${same - 1}/${e.length - 1} renderings identical`);
}

console.log(failures ? `${failures} failures` : "all identical");
process.exit(failures ? 1 : 0);
