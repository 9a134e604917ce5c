// whale generate: stream generated token ids (text once the tokenizer is wired in).
#include <cstdio>
#include <memory>
#include <optional>
#include <span>

#include "cli/commands.h"
#include "cli/util.h"
#include "core/error.h"
#include "infer/generate.h"
#include "infer/speculative.h"
#include "kernels/qmatmul.h"
#include "infer/text_stream.h"
#include "io/checkpoint.h"
#include "tokenizer/tokenizer.h"

#include <filesystem>

namespace whale::cli {

void register_generate(CLI::App& app) {
  struct Options {
    std::string model, prompt_tokens, prompt, attn = "auto", repack = "auto", quantize;
    int64_t max_tokens = 32, batch = 1;
    SamplingParams sampling;
    bool ignore_eos = false, quiet = false, speculative = false;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate tokens from a checkpoint, streaming them as they come");
  cmd->add_option("--model", opt->model, "Checkpoint directory")->required();
  auto* ids_opt = cmd->add_option("--prompt-tokens", opt->prompt_tokens, "Comma-separated prompt token ids");
  auto* text_opt = cmd->add_option("--prompt", opt->prompt,
                                   "Prompt text, encoded with the checkpoint's tokenizer.json; output is streamed as text");
  ids_opt->excludes(text_opt);
  cmd->add_option("--max-tokens", opt->max_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", opt->sampling.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", opt->sampling.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--top-p", opt->sampling.top_p, "Nucleus sampling mass (1 = off)")->capture_default_str();
  cmd->add_option("--min-p", opt->sampling.min_p, "Drop tokens below min_p * p_max (0 = off)")->capture_default_str();
  cmd->add_option("--repetition-penalty", opt->sampling.repetition_penalty, "CTRL-style penalty (1 = off)")
      ->capture_default_str();
  cmd->add_option("--seed", opt->sampling.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--batch", opt->batch, "Run this many copies of the prompt as one batch (seeds seed..seed+n-1)")
      ->capture_default_str();
  cmd->add_option("--attn", opt->attn, "Attention path: auto, absorb or naive")->capture_default_str();
  add_repack_option(cmd, &opt->repack);
  cmd->add_flag("--ignore-eos", opt->ignore_eos, "Keep generating past the end-of-sequence token");
  cmd->add_option("--quantize", opt->quantize,
                  "Requantise the projections at load to q8_0, q4_0, q4_k or q6_k and run them through the "
                  "quantised kernels");
  cmd->add_flag("--speculative", opt->speculative,
                "Draft each next token with the model's MTP head and verify it in the same forward pass "
                "(output distribution unchanged; greedy output identical)");
  cmd->add_flag("--quiet", opt->quiet, "Print only the final ids, no speed report");
  cmd->callback([opt] {
    if (opt->batch < 1) throw Error("--batch", "must be at least 1");
    if (opt->prompt_tokens.empty() && opt->prompt.empty())
      throw Error("generate", "give a prompt with --prompt TEXT or --prompt-tokens 1,2,3");
    auto model = load_model(opt->model);
    apply_repack(*model, opt->repack);
    std::optional<tokenizer::Tokenizer> tok;
    std::vector<int32_t> prompt;
    if (!opt->prompt.empty()) {
      const std::string path = model->source;
      auto found = take_tokenizer(*model);  // tokenizer.json, or the one inside a GGUF file
      if (!found)
        throw Error(path, "--prompt needs the checkpoint's tokenizer.json (or a GGUF with a tokenizer); use --prompt-tokens for a model without one");
      tok.emplace(std::move(*found));
      for (int id : tok->encode(opt->prompt, true)) prompt.push_back(int32_t(id));
      if (tok->vocab_size() > model->config.vocab_size)
        throw Error(path, "tokenizer has " + std::to_string(tok->vocab_size()) + " ids but the model's vocab_size is " +
                              std::to_string(model->config.vocab_size));
    } else {
      prompt = parse_token_list(opt->prompt_tokens, "--prompt-tokens");
    }
    GenerateOptions g;
    g.max_tokens = opt->max_tokens;
    g.sampling = opt->sampling;
    g.stop_at_eos = !opt->ignore_eos;
    std::optional<Generator> gen;
    std::optional<SpeculativeGenerator> spec;
    if (opt->speculative) {
      spec.emplace(*model, parse_attention_mode(opt->attn));
    } else {
      gen.emplace(*model, parse_attention_mode(opt->attn));
    }
    if (!opt->quantize.empty()) {
      const GgmlType qt = qmatmul_type_from_name(opt->quantize, "--quantize");
      (spec ? spec->transformer() : gen->transformer()).quantize_weights(qt);
    }
    const tokenizer::Tokenizer* tok_ptr = tok ? &*tok : nullptr;
    SpeculativeStats stats;
    std::vector<std::vector<int32_t>> prompts(size_t(opt->batch), prompt);
    // Text streams through TextStream: whole UTF-8 characters only, special tokens left out,
    // and reasoning that the model opens with "<think>" set apart as whale chat prints it.
    std::optional<TextStream> text;
    if (tok_ptr) text.emplace(*tok_ptr, /*starts_in_think=*/false);
    bool in_reasoning = false;
    auto show = [&](const TextDelta& d) {
      if (!d.reasoning.empty()) {
        if (!in_reasoning) std::fputs("<think>\n", stdout);
        in_reasoning = true;
        std::fwrite(d.reasoning.data(), 1, d.reasoning.size(), stdout);
      }
      if (!d.content.empty()) {
        if (in_reasoning) std::fputs("\n</think>\n\n", stdout);
        in_reasoning = false;
        std::fwrite(d.content.data(), 1, d.content.size(), stdout);
      }
    };
    TokenCallback stream = [&](int64_t b, int32_t tok_id) {
                              if (opt->batch == 1) {
                                if (text) {
                                  show(text->push(tok_id));
                                } else {
                                  std::printf("%d ", tok_id);
                                }
                                std::fflush(stdout);
                              }
                              (void)b;
                              return true;
                            };
    auto out = spec ? spec->generate(prompts, g, stream, &stats) : gen->generate(prompts, g, stream, &stats);
    if (opt->batch == 1) {
      if (text) show(text->finish());
      if (in_reasoning) std::fputs("\n</think>", stdout);
      std::printf("\n");
    } else {
      for (const auto& seq : out) {
        if (tok_ptr) {
          std::vector<int> ids(seq.begin(), seq.end());
          std::printf("%s\n---\n", tok_ptr->decode(ids).c_str());
        } else {
          for (int32_t t : seq) std::printf("%d ", t);
          std::printf("\n");
        }
      }
    }
    std::fflush(stdout);
    if (!opt->quiet)
      std::fprintf(stderr, "prefill: %lld tokens, %.1f tok/s | decode: %lld tokens, %.1f tok/s (batch %lld)\n",
                   (long long)stats.prompt_tokens, stats.prefill_tokens_per_second(),
                   (long long)stats.decode_tokens, stats.decode_tokens_per_second(), (long long)opt->batch);
    if (!opt->quiet && spec)
      std::fprintf(stderr, "speculative: %lld of %lld MTP drafts accepted (%.1f%%), %.2f tokens per sequence per verify pass\n",
                   (long long)stats.accepted, (long long)stats.drafted, 100.0 * stats.acceptance_rate(),
                   stats.drafted > 0 ? double(stats.decode_tokens) / double(stats.drafted) : 0.0);
  });
}

}  // namespace whale::cli
