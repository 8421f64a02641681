# runtime: the multi-process runtime against the dense pass, and its
# supervision (a worker killed mid-generation), on the default model.
add_executable(test_runtime ${CMAKE_SOURCE_DIR}/tests/test_runtime.c)
target_link_libraries(test_runtime PRIVATE hearth_coord)
add_dependencies(test_runtime hearth-gpu-worker hearth-cpu-worker)
if(HEARTH_SANITIZE)
  # under the sanitizers: the same checks on fewer tokens (the full run is the normal build's)
  add_test(NAME runtime_equivalence COMMAND test_runtime 2 8)
else()
  add_test(NAME runtime_equivalence COMMAND test_runtime)
endif()
set_tests_properties(runtime_equivalence PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 1200 RUN_SERIAL TRUE)
add_test(NAME runtime_supervision
         COMMAND ${HEARTH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_supervision.py $<TARGET_FILE:hearth>)
set_tests_properties(runtime_supervision PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900 RUN_SERIAL TRUE)
