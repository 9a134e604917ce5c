// Supervised fine-tuning on chat conversations (OpenAI messages JSONL) rendered through the
// model's chat template: loss only on assistant tokens (their <think> reasoning and closing
// end-of-sentence token included), several conversations packed per row with segment ids so
// they never attend to each other, AdamW and checkpoints as in pretraining.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/progress.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "train/optimizer.h"

namespace whale {

// One tokenised conversation. weights[i] is 1 when tokens[i] is an assistant token the model
// learns to produce, else 0 (system/user text and template markers).
struct SftExample {
  std::vector<int32_t> tokens;
  std::vector<float> weights;
};

// Renders messages with the chat template (no generation prompt) and marks the assistant spans:
// everything an assistant message adds after its "<｜Assistant｜>" marker. A BOS id is put first
// when the tokenizer has one and the text does not start with it.
SftExample tokenize_conversation(const std::vector<tokenizer::ChatMessage>& messages, const tokenizer::Tokenizer& tok,
                                 tokenizer::ChatFormat format);

// {"messages": [...]} per line; errors name FILE:LINE. Lines without an assistant message are refused.
std::vector<SftExample> load_chat_jsonl(const std::string& path, const tokenizer::Tokenizer& tok,
                                        tokenizer::ChatFormat format);

// B rows of T + 1 tokens, each holding whole conversations back to back (padding last).
struct PackedBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;       // [B, T + 1]
  std::vector<int32_t> segment_ids;  // [B, T]
  std::vector<float> loss_mask;      // [B, T]: weight of the target at t (token t + 1)
};

// Groups example indices (in the given order) into rows of at most `row_tokens` tokens, greedily:
// a conversation goes into the current row if it fits, else starts the next. Longer
// conversations are cut to row_tokens.
std::vector<std::vector<size_t>> pack_rows(const std::vector<SftExample>& examples, const std::vector<size_t>& order,
                                           int64_t row_tokens);
// Lays rows out as a batch of sequence length T (row_tokens = T + 1), padding with pad_id.
PackedBatch make_packed_batch(const std::vector<SftExample>& examples, const std::vector<std::vector<size_t>>& rows,
                              int64_t T, int32_t pad_id);

struct SftOptions {
  std::string model_dir;   // checkpoint or run directory (its tokenizer.json is used)
  std::string data_path;   // chat JSONL
  std::string out_dir;
  std::string chat_format = "deepseek-v3";  // V3 keeps the assistant's <think> text; R1's template drops it
  int64_t steps = 0;       // 0: from epochs
  double epochs = 1.0;
  int64_t batch = 8, seq_len = 256;  // rows per step, tokens per row (minus one)
  AdamWOptions adamw{0.9, 0.95, 1e-8, 0.0};
  double lr = 1e-3, min_lr_ratio = 0.1, grad_clip = 1.0;
  int64_t warmup = -1;     // -1: 5% of the steps
  double mtp_lambda = 0.0;
  int64_t save_every = 0;
  uint64_t seed = 0;
};

struct SftResult {
  int64_t steps = 0, conversations = 0, truncated = 0, rows_per_epoch = 0;
  double first_loss = 0, final_loss = 0, tokens_per_second = 0;
  std::string final_checkpoint;
};

SftResult sft(const SftOptions& options, Progress* progress);

}  // namespace whale
