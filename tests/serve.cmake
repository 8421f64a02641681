# serve: `hearth serve` driven over HTTP by the openai client, raw sockets
# and a headless browser (tests/test_serve*.py, pytest), plus the request
# parser's fuzz target (tests/fuzz_serve.c) and the service unit.
if(TARGET hearth)
  set(_serve_env ${CMAKE_COMMAND} -E env HEARTH_BIN=$<TARGET_FILE:hearth>)
  set(_pytest ${HEARTH_PYTHON} -m pytest -q -p no:cacheprovider -x -rA)
  if(NOT HEARTH_SANITIZE)
    foreach(t serve serve_errors serve_concurrency serve_supervision serve_browser serve_deploy)
      add_test(NAME ${t} COMMAND ${_serve_env} HEARTH_BUILD_DIR=${CMAKE_BINARY_DIR} ${_pytest}
                                 ${CMAKE_SOURCE_DIR}/tests/test_${t}.py)
      set_tests_properties(${t} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900 RUN_SERIAL TRUE)
    endforeach()
  else()
    # under ASan/UBSan: the bad-input suite, where memory errors would hide
    add_test(NAME serve_errors COMMAND ${_serve_env} HEARTH_TEST_SANITIZED=1 ${_pytest}
                                       ${CMAKE_SOURCE_DIR}/tests/test_serve_errors.py)
    set_tests_properties(serve_errors PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 1200 RUN_SERIAL TRUE)
  endif()
endif()
