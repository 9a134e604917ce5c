# Independent PyTorch reference for DeepSeek-V2/V3 (tests/reference/README.md).
# Needs /usr/bin/python3 with Debian's python3-torch and python3-numpy.
add_test(NAME reference_logits
  COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/reference/compare_whale.py
          $<TARGET_FILE:whale> ${CMAKE_BINARY_DIR}/reference_work)
set_tests_properties(reference_logits PROPERTIES TIMEOUT 1200 LABELS reference)

add_test(NAME reference_selftest
  COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/reference/test_reference.py)
set_tests_properties(reference_selftest PROPERTIES TIMEOUT 600 LABELS reference)
