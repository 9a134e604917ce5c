// Builds tests/tokenizer/data/corpus.jsonl: >= 1 MB of varied text, one JSON string per line,
// for the id comparison against the reference tokenizers. Deterministic (seeded PRNG), so
// rerunning it reproduces the committed file:
//   node tests/js/make_corpus.js /work/shared/data > tests/tokenizer/data/corpus.jsonl
// Sources: public-domain books and GSM8K (MIT) from the shared data folder, plus the
// hand-written snippets below. Only characters assigned by Unicode 14 are used, because
// PCRE2 10.42 (Debian) knows Unicode 14 while Node knows a newer version.
const fs = require("fs");
const path = require("path");
const root = process.argv[2] || "/work/shared/data";

let seed = 20240607;
function rand() {  // mulberry32
  seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];
const docs = [];

// Slices of prose: ~2-6 KB windows starting at random offsets (snapped to a line start).
function slices(file, count) {
  const text = fs.readFileSync(path.join(root, file), "utf8");
  for (let i = 0; i < count; ++i) {
    let start = Math.floor(rand() * (text.length - 8000));
    start = text.indexOf("\n", start) + 1;
    const len = 2000 + Math.floor(rand() * 4000);
    docs.push(text.slice(start, start + len));
  }
}
slices("corpus/austen/emma.txt", 20);
slices("corpus/austen/prideprejudice.txt", 15);
slices("corpus/tinyshakespeare.txt", 20);
slices("corpus/devils_dictionary.txt", 15);
slices("corpus/jargon.txt", 20);
slices("corpus/bible_kjv.txt", 10);
slices("corpus/bible_web.txt", 10);
slices("corpus/tinystories/niklas6_tinystories.txt", 15);
slices("corpus/tinystories/arnoochka_tinystories_lower.txt", 10);

// GSM8K questions and worked answers (with <<calc>> annotations and #### answers).
const gsm = fs.readFileSync(path.join(root, "gsm8k/test.jsonl"), "utf8").trim().split("\n");
for (let i = 0; i < 700; ++i) {
  const q = JSON.parse(gsm[i]);
  docs.push(i % 2 ? q.question : q.question + "\n" + q.answer);
}

const multilingual = [
  // Indonesian
  "Selamat pagi, apa kabar? Saya sedang belajar bahasa Indonesia di Universitas Gadjah Mada.",
  "Pemerintah mengumumkan bahwa harga bahan bakar minyak akan naik mulai tanggal 1 Januari 2025.",
  "Jakarta adalah ibu kota Indonesia, dengan penduduk lebih dari 10 juta jiwa. Macetnya luar biasa!",
  "Anak-anak bermain sepak bola di lapangan, sementara ibu-ibu berbelanja di pasar tradisional.",
  // Chinese
  "你好，世界！今天天气很好，我们去公园散步吧。",
  "深度求索（DeepSeek）发布了新的大语言模型，参数量达到6710亿，其中每个词元激活370亿。",
  "《红楼梦》是中国古典四大名著之一，作者曹雪芹。书中描写了贾、史、王、薛四大家族的兴衰。",
  "人工智能正在改变我们的生活方式：从语音助手到自动驾驶，再到医疗诊断。",
  "他说：“我明天再来。”然后就走了……",
  // Japanese
  "日本語のテキストとカタカナ、ひらがな、漢字が混ざっています。",
  "東京タワーは1958年に完成しました。高さは333メートルです。",
  "すみません、駅はどこですか？　まっすぐ行って、二つ目の角を右に曲がってください。",
  "コンピュータ・プログラミングは楽しい！ｶﾀｶﾅの半角も使います。",
  // Korean
  "안녕하세요? 저는 한국어를 공부하고 있습니다. 서울은 아름다운 도시입니다.",
  "대한민국의 수도는 서울이며, 인구는 약 950만 명입니다.",
  "오늘 날씨가 정말 좋네요! 같이 산책할까요?",
  // Arabic, Hebrew, Persian
  "مرحبا بالعالم! اللغة العربية جميلة جداً، وتُكتب من اليمين إلى اليسار.",
  "القاهرة هي عاصمة مصر، ويبلغ عدد سكانها أكثر من ٢٠ مليون نسمة.",
  "שלום עולם! עברית היא שפה שמית.",
  "سلام دنیا! زبان فارسی بسیار زیباست.",
  // Others
  "Привет, мир! Москва — столица России. Ёжик в тумане.",
  "Γειά σου Κόσμε! Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
  "नमस्ते दुनिया! हिन्दी भारत की राजभाषा है।",
  "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
  "Xin chào thế giới! Tiếng Việt có nhiều dấu thanh: à á ả ã ạ.",
  "Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy.",
  "Größe, Übermaß, Straße — naïve café façade, Ærøskøbing, smörgåsbord.",
  // Decomposed (NFD) forms: Qwen's NFC normalizer must compose them first.
  "Cafe\u0301 na\u0131\u0308ve re\u0301sume\u0301 A\u030angstro\u0308m",
  "e\u0300 e\u0301 e\u0302 e\u0308 o\u0303 n\u0303 u\u0308 \u1100\u1161\u11a8 \u304b\u3099",
  "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and ligatures ﬁ ﬂ and ① ② ③ and Ⅻ",
];
const code = [
  "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5\n",
  "import numpy as np\n\nclass Model(nn.Module):\n    def __init__(self, dim: int = 512) -> None:\n        super().__init__()\n        self.w = nn.Linear(dim, dim, bias=False)\n",
  "int main() { printf(\"%d\\n\", 42); return 0; }",
  "#include <vector>\ntemplate <typename T>\nT sum(const std::vector<T>& v) {\n\tT s{};\n\tfor (auto& x : v) s += x;\n\treturn s;\n}\n",
  "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
  "const f = async (x) => { await fetch(`/api/${x}?q=1&r=2`); return x?.y ?? 0; };",
  "SELECT id, name, COUNT(*) AS n FROM users WHERE age >= 18 GROUP BY id ORDER BY n DESC;",
  "<html>\n  <body class=\"main\">\n    <p>Hello &amp; welcome!</p>\n  </body>\n</html>",
  "func (s *Server) Handle(w http.ResponseWriter, r *http.Request) {\n\tif err != nil {\n\t\treturn\n\t}\n}",
  "#!/bin/bash\nfor f in *.txt; do\n  wc -l \"$f\" | awk '{print $1}' >> out.log 2>&1\ndone\n",
  "{\"name\": \"whale\", \"version\": \"0.1.0\", \"deps\": [\"pcre2\", \"utf8proc\"], \"ok\": true, \"n\": -3.5e-7}",
  "x = [i**2 for i in range(100) if i % 3 == 0]; y = {k: v for k, v in zip('abc', [1,2,3])}",
  "public static void main(String[] args) throws IOException {\r\n    System.out.println(\"CRLF lines\");\r\n}\r\n",
  "\\begin{equation} E = mc^2, \\quad \\int_0^\\infty e^{-x^2} dx = \\frac{\\sqrt{\\pi}}{2} \\end{equation}",
  "matrix[i][j] += a[i][k] * b[k][j]; // O(n^3)\n/* block comment */ x <<= 2; y >>>= 1; z != w && q || !r;",
];
const emoji = [
  "emoji: 😀👍🏽🇮🇩 ok", "👨‍👩‍👧‍👦 family, 👩🏾‍💻 coder, 🏳️‍🌈 flag, ❤️ heart, ✌🏻 peace",
  "🇯🇵🇺🇸🇬🇧🇨🇳 flags", "🎉🎉🎉 party!!! 🔥💯", "weather: ☀️ 🌧️ ⛈️ ❄️", "™ © ® ° ± × ÷ € £ ¥ ₹ ₿ ∞ ≠ ≤ ≥ → ⇒ ∀ ∃",
];
const specialsDs = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
  "<｜tool▁calls▁begin｜>", "<｜tool▁sep｜>", "<｜fim▁hole｜>", "<|EOT|>", "<｜▁pad▁｜>", "<｜place▁holder▁no▁7｜>",
  "<think>", "</think>", "<｜User", "｜>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "<|im_start"];
const spaces = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n", "  \n  ", "\u00a0", "\u3000",
  "\u2003", "\ufeff", "\u0085", "\u180e", "\u200b", " \t \n", "\v", "\f"];
const numbers = [];
for (let n = 1; n <= 40; ++n) {
  let s = "";
  for (let i = 0; i < n; ++i) s += String(Math.floor(rand() * 10));
  numbers.push(s);
}
numbers.push("3.14159", "1,000,000", "-42", "1e-9", "0x1F", "2024-06-07", "12:30:45", "١٢٣٤", "१२३", "Ⅷ", "½", "²³");

// Short snippets, each on its own line, then random mixtures of everything.
for (const list of [multilingual, code, emoji, specialsDs, numbers]) for (const s of list) docs.push(s);
for (let n = 1; n <= 64; n *= 2) {
  docs.push(" ".repeat(n) + "x" + " ".repeat(n));
  docs.push("a" + "\t".repeat(n) + "b" + "\n".repeat(n));
}
docs.push("", " ", "\n", "  leading spaces", "trailing spaces   ", "!!!???...", "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'ſ");
const pools = [multilingual, multilingual, code, emoji, specialsDs, spaces, spaces, numbers, numbers];
for (let i = 0; i < 2500; ++i) {
  let s = "";
  const parts = 3 + Math.floor(rand() * 12);
  for (let k = 0; k < parts; ++k) s += pick(pick(pools));
  docs.push(s);
}
process.stdout.write(docs.map((d) => JSON.stringify(d)).join("\n") + "\n");
