# whale's backward pass (`whale grad`) against PyTorch autograd on the independent reference
# (tests/reference/README.md, "Gradients"). Needs /usr/bin/python3 with Debian's python3-torch.
# reference_grads prints "SKIP: whale has no grad subcommand" and passes while whale has none.
add_test(NAME reference_grads
  COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/reference/compare_grads.py
          $<TARGET_FILE:whale> ${CMAKE_BINARY_DIR}/reference_grads_work)
set_tests_properties(reference_grads PROPERTIES TIMEOUT 600 LABELS reference)

add_test(NAME reference_grad_selftest
  COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/reference/test_grad_reference.py)
set_tests_properties(reference_grad_selftest PROPERTIES TIMEOUT 600 LABELS reference)
