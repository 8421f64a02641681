# batch: many sequences at once through the engine (continuous batching):
# every sequence's tokens and logits are those it gives alone, in one
# process and through the runtime, with and without an H2O budget, and with
# a sidecar; cancel frees a slot at the next step; a chat's next turn reuses
# the cached prefix (tests/test_batch.c).
add_executable(test_batch ${CMAKE_SOURCE_DIR}/tests/test_batch.c)
target_link_libraries(test_batch PRIVATE hearth_coord)
add_dependencies(test_batch hearth-gpu-worker hearth-cpu-worker)
set(_rt --cpu-workers 2 --hot-fraction 0.5)
add_test(NAME batch_single COMMAND test_batch --single-process)
add_test(NAME batch_kv_runtime COMMAND test_batch ${_rt} --kv-budget 24 --kv-type q8 --kv-cold q8 --kv-recall 16)
set(_batch_tests batch_single batch_kv_runtime)
if(NOT HEARTH_SANITIZE) # under the sanitizers: the two above (the rest are the normal build's)
  add_test(NAME batch_runtime COMMAND test_batch ${_rt})
  add_test(NAME batch_kv_single COMMAND test_batch --single-process --kv-budget 24 --kv-type q8)
  list(APPEND _batch_tests batch_runtime batch_kv_single)
endif()
set_tests_properties(${_batch_tests} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900 RUN_SERIAL TRUE
                     ENVIRONMENT "HEARTH_TEST_MODEL=${HEARTH_TEST_MODEL}")
# with a sidecar (hearth profile + plan on a slice of the calibration text):
# the sparse FFN in every worker, each sequence still as alone
if(TARGET hearth AND NOT HEARTH_SANITIZE)
  add_test(NAME batch_sidecar_setup
           COMMAND sh -c "d=$(\"$2\" \"$3/batch_text\") && \"$1\" profile -m \"$4\" -f \"$d/calibration.txt\" -o \"$3/batch_sidecar.gguf\" --tokens 256 -c 128 --sparsity 0.5 && \"$1\" plan -m \"$4\" --sidecar \"$3/batch_sidecar.gguf\" --gpu-budget 80M -c 256 --epochs 2 --predictors on"
                   sh $<TARGET_FILE:hearth> ${CMAKE_SOURCE_DIR}/deploy/corpus.sh ${CMAKE_BINARY_DIR} ${HEARTH_TEST_MODEL})
  set_tests_properties(batch_sidecar_setup PROPERTIES FIXTURES_SETUP batch_sidecar TIMEOUT 600)
  add_test(NAME batch_sidecar COMMAND test_batch ${_rt} --sidecar ${CMAKE_BINARY_DIR}/batch_sidecar.gguf)
  set_tests_properties(batch_sidecar PROPERTIES FIXTURES_REQUIRED batch_sidecar SKIP_RETURN_CODE 77 TIMEOUT 900
                       RUN_SERIAL TRUE ENVIRONMENT "HEARTH_TEST_MODEL=${HEARTH_TEST_MODEL}")
endif()
