# Checkpoint resume is exact, and SIGKILL at any moment leaves a loadable checkpoint.
add_test(NAME train_resume_and_kill
         COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/train/test_resume.py $<TARGET_FILE:whale>
                 ${CMAKE_BINARY_DIR}/train_resume_work ${CMAKE_SOURCE_DIR})
set_tests_properties(train_resume_and_kill PROPERTIES TIMEOUT 900 LABELS integration)
