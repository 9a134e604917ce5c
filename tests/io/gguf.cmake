# GGUF end to end through the CLI: checkpoint vs exported GGUF logits (exact in F32),
# quantize, and a damaged file's error. See tests/io/gguf_cli_test.sh.
add_test(NAME gguf_cli
  COMMAND ${CMAKE_SOURCE_DIR}/tests/io/gguf_cli_test.sh $<TARGET_FILE:whale> ${CMAKE_SOURCE_DIR}
          ${CMAKE_BINARY_DIR}/gguf_cli)
set_tests_properties(gguf_cli PROPERTIES TIMEOUT 120 ENVIRONMENT "OMP_NUM_THREADS=2")
