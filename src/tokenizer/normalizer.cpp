#include "tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>

#include "core/error.h"

namespace whale::tokenizer {
namespace {

std::string normalize_once(std::string_view text, NormalForm form) {
  int options = UTF8PROC_STABLE;
  switch (form) {
    case NormalForm::NFC: options |= UTF8PROC_COMPOSE; break;
    case NormalForm::NFD: options |= UTF8PROC_DECOMPOSE; break;
    case NormalForm::NFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case NormalForm::NFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* result = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                    utf8proc_ssize_t(text.size()), &result,
                                    utf8proc_option_t(options));
  if (n < 0) throw Error("normalizer", utf8proc_errmsg(n));
  std::string out(reinterpret_cast<char*>(result), size_t(n));
  std::free(result);
  return out;
}

}  // namespace

const char* normal_form_name(NormalForm form) {
  switch (form) {
    case NormalForm::NFC: return "NFC";
    case NormalForm::NFD: return "NFD";
    case NormalForm::NFKC: return "NFKC";
    case NormalForm::NFKD: return "NFKD";
  }
  return "?";
}

bool Normalizer::apply(std::string_view text, std::string& out) const {
  if (forms_.empty()) return false;
  // ASCII is invariant under all four forms; most text takes this exit.
  bool ascii = true;
  for (unsigned char c : text) {
    if (c >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return false;
  std::string current(text);
  for (NormalForm form : forms_) current = normalize_once(current, form);
  if (current == text) return false;
  out = std::move(current);
  return true;
}

}  // namespace whale::tokenizer
