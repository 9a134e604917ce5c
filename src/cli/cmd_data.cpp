// whale data prepare: tokenise text files into training shards.
#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "train/data.h"

namespace whale::cli {

void register_data(CLI::App& app) {
  auto o = std::make_shared<DataPrepareOptions>();
  CLI::App* data = app.add_subcommand("data", "Training data");
  data->require_subcommand(1);
  CLI::App* prep = data->add_subcommand("prepare",
                                        "Tokenise text files into uint32 shards (documents "
                                        "separated by EOS) with a validation split");
  prep->add_option("--tokenizer", o->tokenizer,
                   "tokenizer.json (tokenizer_config.json beside it is copied too)")
      ->required();
  prep->add_option("--out", o->out_dir, "Output data directory")->required();
  prep->add_option("--val-fraction", o->val_fraction,
                   "Share of tokens held out for validation (whole documents)")
      ->capture_default_str();
  prep->add_option("--shard-tokens", o->shard_tokens, "Tokens per shard file")
      ->capture_default_str();
  prep->add_option("--seed", o->seed, "Seed of the train/validation assignment")
      ->capture_default_str();
  prep->add_option("files", o->files,
                   "Text files; lines that are exactly <|endoftext|> separate documents, otherwise "
                   "a file is "
                   "cut into ~64 KB documents at blank lines")
      ->required();
  prep->callback([o] {
    TerminalProgress progress;
    const auto t0 = std::chrono::steady_clock::now();
    const DataStats s = prepare_data(*o, &progress);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf(
        "%lld documents; %lld train tokens in %lld shards, %lld validation tokens in %lld shards; "
        "%.1f MB in %.2f s (%.1f MB/s) -> %s\n",
        (long long)s.documents, (long long)s.train_tokens, (long long)s.train_shards,
        (long long)s.val_tokens, (long long)s.val_shards, double(s.input_bytes) / 1e6, seconds,
        double(s.input_bytes) / 1e6 / seconds, o->out_dir.c_str());
  });
}

}  // namespace whale::cli
