# whale serve integration tests: the real server on a loopback port with a tiny random
# checkpoint (configs/tiny-v3.json + a trained 400-id tokenizer), driven by the official
# `openai` npm client, by headless Chromium (Debian's chromium through playwright-core) and by
# a 32-client load test. Run `npm ci` in tests/js first. The screenshot lands in
# ${CMAKE_BINARY_DIR}/serve_web/web_chat.png.
foreach(name openai_client web load)
  add_test(NAME serve_${name}
    COMMAND node ${CMAKE_SOURCE_DIR}/tests/js/serve/${name}.js $<TARGET_FILE:whale> ${CMAKE_SOURCE_DIR}
            ${CMAKE_BINARY_DIR}/serve_${name})
  set_tests_properties(serve_${name} PROPERTIES TIMEOUT 120 ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=passive")
endforeach()
