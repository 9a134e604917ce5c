#include "tokenizer/utf8.h"

namespace whale::tokenizer {
namespace {

// Length of the well-formed sequence starting at `pos`, or 0 when it is ill-formed; on failure
// `subpart` receives the length of the maximal subpart to replace with one U+FFFD.
size_t valid_sequence_length(std::string_view s, size_t pos, size_t& subpart) {
  auto byte = [&](size_t i) -> unsigned { return i < s.size() ? (unsigned char)s[i] : 0x100u; };
  unsigned b0 = byte(pos);
  subpart = 1;
  if (b0 < 0x80) return 1;
  size_t need;
  unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte (Table 3-7)
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // excludes surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // stops at U+10FFFF
  } else {
    return 0;
  }
  for (size_t k = 1; k < need; ++k) {
    unsigned b = byte(pos + k);
    unsigned l = k == 1 ? lo : 0x80u, h = k == 1 ? hi : 0xBFu;
    if (b < l || b > h) {
      subpart = k;
      return 0;
    }
  }
  return need;
}

}  // namespace

bool is_valid_utf8(std::string_view text) {
  size_t pos = 0, subpart;
  while (pos < text.size()) {
    size_t n = valid_sequence_length(text, pos, subpart);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

std::string sanitize_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0, subpart;
  while (pos < text.size()) {
    size_t n = valid_sequence_length(text, pos, subpart);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      pos += subpart;
    } else {
      out.append(text.substr(pos, n));
      pos += n;
    }
  }
  return out;
}

size_t utf8_char_length(std::string_view text, size_t pos) {
  size_t subpart;
  size_t n = valid_sequence_length(text, pos, subpart);
  return n ? n : subpart;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

}  // namespace whale::tokenizer
