# kvcache: the H2O heavy-hitter KV cache (core/kvcache.h).
# kv_unit: the policy on hand-made attention patterns; kv_model: the real model
# (HEARTH_TEST_MODEL, else skipped with 77): budget >= context is bit-identical
# to the dense cache, a prompt longer than the budget works.
add_executable(test_kvcache ${CMAKE_SOURCE_DIR}/tests/test_kvcache.c)
target_link_libraries(test_kvcache PRIVATE hearth_core m)
add_test(NAME kv_unit COMMAND test_kvcache)
add_test(NAME kv_model COMMAND test_kvcache model)
set_tests_properties(kv_model PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)

# kv_needle: a passkey hidden in filler text, read back greedily through `hearth
# run` with the full cache and a 50% budget, heavy hitters ranked by sum (H2O),
# by mean (--kv-score mean) and by the decayed sum (--kv-decay 0.95) (2 depths x
# 2 budgets x 3 rankings, ~1.5 min on 2 cores; the full grid:
# tests/test_needle.py HEARTH --full --kv-score all). Fails only if the
# full cache misses (the prompt format broke); the 50% result is reported. Not
# in the sanitizer build, where the ~4000 prompt tokens take minutes.
if(TARGET hearth AND NOT HEARTH_SANITIZE)
  add_test(NAME kv_needle COMMAND ${HEARTH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_needle.py $<TARGET_FILE:hearth>
           --kv-score all)
  set_tests_properties(kv_needle PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()

# microbenchmark (not run by ctest): one decode step's attention at a depth,
# full cache against H2O against hot/cold KV, see its header comment
add_executable(bench_kvattn ${CMAKE_SOURCE_DIR}/tests/bench/bench_kvattn.c)
target_link_libraries(bench_kvattn PRIVATE hearth_core m)
