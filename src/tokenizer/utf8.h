// UTF-8 helpers shared by the tokenizer stages.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace whale::tokenizer {

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool is_valid_utf8(std::string_view text);

// Replaces every ill-formed subsequence with U+FFFD, one per "maximal subpart" (Unicode 15,
// section 3.9). This is exactly what the WHATWG TextDecoder and Node's Buffer.toString('utf8')
// do, so bytes that reach the JS reference through Node are seen the same way here.
std::string sanitize_utf8(std::string_view text);

// Length in bytes of the UTF-8 character starting at text[pos] (1 for a stray byte).
size_t utf8_char_length(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of `code_point` to `out`.
void append_utf8(std::string& out, char32_t code_point);

}  // namespace whale::tokenizer
