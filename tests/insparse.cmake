# insparse: input-major matrices and the products over active inputs
# (core/insparse.h), fast kernels then forced scalar.
add_executable(test_insparse ${CMAKE_SOURCE_DIR}/tests/test_insparse.c)
target_link_libraries(test_insparse PRIVATE hearth_core)
add_test(NAME insparse_kernels COMMAND test_insparse)
add_test(NAME insparse_kernels_scalar COMMAND test_insparse)
set_tests_properties(insparse_kernels_scalar PROPERTIES ENVIRONMENT "HEARTH_NO_SIMD=1")
# the AVX2 kernels where the CPU has VNNI (q4t's maddubs + madd path)
add_test(NAME insparse_kernels_avx2 COMMAND test_insparse)
set_tests_properties(insparse_kernels_avx2 PROPERTIES ENVIRONMENT "HEARTH_NO_VNNI=1" TIMEOUT 120)
# and the forward pass's masks on the real model (77, skipped, without it)
add_test(NAME insparse_forward COMMAND test_insparse --model ${HEARTH_TEST_MODEL})
set_tests_properties(insparse_kernels insparse_kernels_scalar PROPERTIES TIMEOUT 120)
set_tests_properties(insparse_forward PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77)

# the accuracy curve on a real model (not run by ctest: minutes; see its
# header and docs/hot-cold.md, "Input sparsity")
add_executable(insparse_curve ${CMAKE_SOURCE_DIR}/tests/bench/insparse_curve.c)
target_link_libraries(insparse_curve PRIVATE hearth_core)

# decode microbenchmark on the real model: dense rows against the input-major
# copy at several densities (registered tiny so that it keeps running; the
# numbers: run it by hand, see its header)
add_executable(bench_insparse ${CMAKE_SOURCE_DIR}/tests/bench/bench_insparse.c)
target_link_libraries(bench_insparse PRIVATE hearth_core)
add_test(NAME insparse_bench_tiny COMMAND bench_insparse --tiny -m ${HEARTH_TEST_MODEL})
set_tests_properties(insparse_bench_tiny PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77)

# input sparsity end to end: profile --in-sparsity, one process against the
# runtime, with and without a plan (tests/test_insparse_pipeline.py)
if(TARGET hearth)
  add_test(NAME insparse_pipeline COMMAND ${HEARTH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_insparse_pipeline.py
           $<TARGET_FILE:hearth> ${CMAKE_SOURCE_DIR}/deploy/corpus.sh)
  set_tests_properties(insparse_pipeline PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 1200)
endif()
