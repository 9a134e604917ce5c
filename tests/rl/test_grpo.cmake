# The GRPO objective's gradient (`whale grpo-grad`) against PyTorch autograd in float64 on the
# independent reference model. Needs /usr/bin/python3 with Debian's python3-torch.
add_test(NAME reference_grpo_grads
  COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/rl/test_grpo_ref.py
          $<TARGET_FILE:whale> ${CMAKE_BINARY_DIR}/reference_grpo_work)
set_tests_properties(reference_grpo_grads PROPERTIES TIMEOUT 300 LABELS reference)
