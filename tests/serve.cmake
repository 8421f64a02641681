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

# The request parser's fuzz target: libFuzzer in the sanitizer build (bounded,
# on a copy of the seed corpus), a replay of the corpus in the normal build.
set(SERVE_CORPUS ${CMAKE_SOURCE_DIR}/tests/fuzz/serve_corpus)
if(HEARTH_FUZZ)
  set(HEARTH_FUZZ_SECONDS 60 CACHE STRING "seconds each libFuzzer test runs")
  add_executable(fuzz_serve ${CMAKE_SOURCE_DIR}/tests/fuzz_serve.c ${CMAKE_SOURCE_DIR}/coordinator/serve_req.c)
  target_include_directories(fuzz_serve PRIVATE ${CMAKE_SOURCE_DIR}/coordinator ${CMAKE_SOURCE_DIR}/core)
  target_link_libraries(fuzz_serve PRIVATE PkgConfig::JANSSON ${LIBM})
  target_compile_options(fuzz_serve PRIVATE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
  target_link_options(fuzz_serve PRIVATE -fsanitize=fuzzer,address,undefined)
  add_test(NAME serve_fuzz
           COMMAND sh -c "rm -rf serve_corpus && mkdir serve_corpus && cp '${SERVE_CORPUS}'/* serve_corpus/ && \
exec '$<TARGET_FILE:fuzz_serve>' -max_total_time=${HEARTH_FUZZ_SECONDS} -timeout=10 -max_len=4096 -print_final_stats=1 serve_corpus"
           WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  math(EXPR SERVE_FUZZ_TIMEOUT "${HEARTH_FUZZ_SECONDS} + 120")
  set_tests_properties(serve_fuzz PROPERTIES TIMEOUT ${SERVE_FUZZ_TIMEOUT})
else()
  add_executable(fuzz_serve_replay ${CMAKE_SOURCE_DIR}/tests/fuzz_serve.c ${CMAKE_SOURCE_DIR}/coordinator/serve_req.c)
  target_compile_definitions(fuzz_serve_replay PRIVATE SERVE_FUZZ_REPLAY)
  target_include_directories(fuzz_serve_replay PRIVATE ${CMAKE_SOURCE_DIR}/coordinator ${CMAKE_SOURCE_DIR}/core)
  target_link_libraries(fuzz_serve_replay PRIVATE PkgConfig::JANSSON ${LIBM})
  add_test(NAME serve_fuzz_replay COMMAND fuzz_serve_replay ${SERVE_CORPUS})
endif()
