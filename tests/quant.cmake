# quant, tpool, matmul: kernels, thread pool, matrix products.
add_executable(test_quant ${CMAKE_SOURCE_DIR}/tests/test_quant.c)
target_link_libraries(test_quant PRIVATE hearth_core)
add_test(NAME quant_kernels COMMAND test_quant)
# the same checks with the scalar kernels in the vec_dot/from_float slots
add_test(NAME quant_kernels_scalar COMMAND test_quant)
set_tests_properties(quant_kernels_scalar PROPERTIES ENVIRONMENT "HEARTH_NO_SIMD=1")
# and with the AVX2 kernels where the CPU would take the AVX-512 VNNI ones
add_test(NAME quant_kernels_avx2 COMMAND test_quant)
set_tests_properties(quant_kernels_avx2 PROPERTIES ENVIRONMENT "HEARTH_NO_VNNI=1")

add_executable(test_tpool ${CMAKE_SOURCE_DIR}/tests/test_tpool.c)
target_link_libraries(test_tpool PRIVATE hearth_core)
add_test(NAME tpool_stress COMMAND test_tpool)

add_executable(test_matmul ${CMAKE_SOURCE_DIR}/tests/test_matmul.c)
target_link_libraries(test_matmul PRIVATE hearth_core)
add_test(NAME matmul_vs_naive COMMAND test_matmul)
add_test(NAME matmul_vs_naive_scalar COMMAND test_matmul)
set_tests_properties(matmul_vs_naive_scalar PROPERTIES ENVIRONMENT "HEARTH_NO_SIMD=1")
add_test(NAME matmul_vs_naive_avx2 COMMAND test_matmul)
set_tests_properties(matmul_vs_naive_avx2 PROPERTIES ENVIRONMENT "HEARTH_NO_VNNI=1" TIMEOUT 300)

# microbenchmark: built always; registered with a tiny size only so that it
# keeps building and running (the real numbers: run it by hand, see its --help)
add_executable(bench_matmul ${CMAKE_SOURCE_DIR}/tests/bench/bench_matmul.c)
target_link_libraries(bench_matmul PRIVATE hearth_core)
add_test(NAME matmul_bench_tiny COMMAND bench_matmul --tiny)
# a lost wake-up in the pool would hang rather than fail: bound every test
set_tests_properties(quant_kernels quant_kernels_scalar quant_kernels_avx2 tpool_stress matmul_vs_naive matmul_vs_naive_scalar
                     matmul_bench_tiny PROPERTIES TIMEOUT 300)

# vec: the float kernels of attention (fast path, then forced scalar)
add_executable(test_vec ${CMAKE_SOURCE_DIR}/tests/test_vec.c)
target_link_libraries(test_vec PRIVATE hearth_core)
add_test(NAME vec_kernels COMMAND test_vec)
add_test(NAME vec_kernels_scalar COMMAND test_vec)
set_tests_properties(vec_kernels_scalar PROPERTIES ENVIRONMENT "HEARTH_NO_SIMD=1")
