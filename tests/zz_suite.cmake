# zz_suite: settings for the whole suite, included after every module's tests.
#
# Every test gets HEARTH_TEST_MODEL and HEARTH_PYTHON (set in CMakeLists.txt)
# in its environment.
# With HEARTH_SAN_DIR, this suite also runs the sanitizer build's suite; its
# console log goes to HEARTH_SAN_DIR/Testing/Temporary/console.log, where
# .ci/run's tests/skipcheck.sh finds that suite's skips.
if(HEARTH_SAN_DIR AND NOT HEARTH_SANITIZE)
  add_test(NAME sanitizers
           COMMAND ${CMAKE_CTEST_COMMAND} --test-dir ${HEARTH_SAN_DIR} --output-on-failure
                   -O ${HEARTH_SAN_DIR}/Testing/Temporary/console.log
                   -E "^(forward_ref|tokenizer_hf|cli_model|runtime_supervision)$")
endif()

get_property(_all_tests DIRECTORY PROPERTY TESTS)
foreach(t ${_all_tests})
  get_test_property(${t} ENVIRONMENT _env)
  if(NOT _env)
    set(_env "")
  endif()
  list(APPEND _env "HEARTH_TEST_MODEL=${HEARTH_TEST_MODEL}" "HEARTH_PYTHON=${HEARTH_PYTHON}"
       "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1" "ASAN_OPTIONS=detect_leaks=1")
  set_tests_properties(${t} PROPERTIES ENVIRONMENT "${_env}")
endforeach()
