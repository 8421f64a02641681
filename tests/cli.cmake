# cli: the real `hearth` binary driven as a user would (tests/test_cli.py).
if(TARGET hearth)
  add_test(NAME cli_errors COMMAND ${HEARTH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_cli.py $<TARGET_FILE:hearth> errors)
  add_test(NAME cli_model COMMAND ${HEARTH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_cli.py $<TARGET_FILE:hearth> model)
  set_tests_properties(cli_model PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900)
endif()
