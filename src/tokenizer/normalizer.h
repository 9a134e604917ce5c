// Unicode normalizers of tokenizer.json ("NFC", "NFD", "NFKC", "NFKD" and "Sequence" of them),
// done by utf8proc.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace whale::tokenizer {

enum class NormalForm { NFC, NFD, NFKC, NFKD };

class Normalizer {
 public:
  void add(NormalForm form) { forms_.push_back(form); }
  bool empty() const { return forms_.empty(); }
  const std::vector<NormalForm>& forms() const { return forms_; }
  // `text` must be valid UTF-8. Returns false (leaving `out` untouched) when nothing changes,
  // which is the common case and avoids a copy.
  bool apply(std::string_view text, std::string& out) const;

 private:
  std::vector<NormalForm> forms_;
};

const char* normal_form_name(NormalForm form);

}  // namespace whale::tokenizer
