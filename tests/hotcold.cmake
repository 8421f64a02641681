# hotcold: hearth profile + plan + the sparse FFN through the CLI, single
# process against the runtime (tests/test_hotcold.py).
if(TARGET hearth)
  add_test(NAME hotcold_pipeline COMMAND ${HEARTH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_hotcold.py
           $<TARGET_FILE:hearth> ${CMAKE_SOURCE_DIR}/deploy/corpus.sh)
  set_tests_properties(hotcold_pipeline PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 1200)
endif()
