# End-to-end comparison with the npm reference tokenizers (run `npm ci` in tests/js first):
# ids on 1.69 MB of text for DeepSeek-V3, Qwen3 and a whale-trained tokenizer, decode
# round trips, invalid UTF-8 and chat rendering. See tests/js/compare.js.
add_test(NAME tokenizer_vs_js
  COMMAND node ${CMAKE_SOURCE_DIR}/tests/js/compare.js $<TARGET_FILE:whale> ${CMAKE_SOURCE_DIR}
          ${CMAKE_BINARY_DIR}/tokenizer_vs_js)
set_tests_properties(tokenizer_vs_js PROPERTIES TIMEOUT 300 ENVIRONMENT "OMP_NUM_THREADS=2")
