#include "tokenizer/byte_level.h"

#include "tokenizer/utf8.h"

namespace whale::tokenizer {
namespace {

struct Tables {
  std::array<std::string, 256> to_unicode;
  std::array<int, 512> from_code_point;  // every mapped code point is below 0x144
  Tables() {
    from_code_point.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      // Printable Latin-1 bytes map to themselves; the rest are shifted past U+0100.
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      char32_t cp = printable ? char32_t(b) : char32_t(256 + extra++);
      append_utf8(to_unicode[b], cp);
      from_code_point[cp] = b;
    }
  }
};

const Tables& tables() {
  static const Tables t;  // immutable after construction
  return t;
}

}  // namespace

const std::array<std::string, 256>& byte_to_unicode() { return tables().to_unicode; }

bool byte_level_decode(std::string_view token, std::string& out) {
  const Tables& t = tables();
  bool all_mapped = true;
  size_t pos = 0;
  while (pos < token.size()) {
    size_t n = utf8_char_length(token, pos);
    unsigned c0 = (unsigned char)token[pos];
    char32_t cp = 0x200;
    if (n == 1 && c0 < 0x80) {
      cp = c0;
    } else if (n == 2) {
      cp = ((c0 & 0x1F) << 6) | ((unsigned char)token[pos + 1] & 0x3F);
    }
    if (cp < 0x200 && t.from_code_point[cp] >= 0) {
      out += char(t.from_code_point[cp]);
    } else {
      out.append(token.substr(pos, n));
      all_mapped = false;
    }
    pos += n;
  }
  return all_mapped;
}

std::string byte_level_encode(std::string_view bytes) {
  const auto& map = byte_to_unicode();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += map[b];
  return out;
}

}  // namespace whale::tokenizer
