# Each test area may add CTest entries (reference comparisons, integration tests)
# in its own tests/<area>/<area>.cmake, so areas don't edit one shared file.
file(GLOB WHALE_TEST_CMAKE CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/*/*.cmake)
foreach(f ${WHALE_TEST_CMAKE})
  include(${f})
endforeach()
