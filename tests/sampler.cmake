# sampler, sha256 and the NumPy forward-pass oracle (tests/reference/llama_numpy.py).

add_executable(test_sampler ${CMAKE_SOURCE_DIR}/tests/test_sampler.c)
target_link_libraries(test_sampler PRIVATE hearth_core)
add_test(NAME sampler_unit COMMAND test_sampler)

add_executable(test_sha256 ${CMAKE_SOURCE_DIR}/tests/test_sha256.c)
target_link_libraries(test_sha256 PRIVATE hearth_core)
add_test(NAME sha256_unit COMMAND test_sha256) # model from $HEARTH_TEST_MODEL; skipped part when absent

# The oracle and the comparison need Python 3 with numpy and gguf; they exit 77
# (skipped) when the model ($HEARTH_TEST_MODEL) or the gguf package is absent.
if(NOT HEARTH_PYTHON)
  set(HEARTH_PYTHON python3)
endif()
# forward_dump is declared in tests/forward.cmake, included before this file (sorted).
# forward_ref starts with the oracle's self-checks (dequantization against the
# block layouts, batched against incremental, " Paris"); without forward_dump only
# those run, as forward_ref_oracle. With it, it writes a temporary F32 copy of the
# model (~540 MB, under the build tree, deleted at exit) for the strict comparison,
# then compares the original Q4_1 model too (~45 s on 2 cores).
if(TARGET forward_dump)
  add_test(NAME forward_ref
           COMMAND ${HEARTH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_forward_ref.py
                   --tmpdir ${CMAKE_CURRENT_BINARY_DIR}/forward_ref_tmp $<TARGET_FILE:forward_dump>)
  set_tests_properties(forward_ref PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600)
else()
  add_test(NAME forward_ref_oracle
           COMMAND ${HEARTH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_forward_ref.py --oracle-only)
  set_tests_properties(forward_ref_oracle PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()
