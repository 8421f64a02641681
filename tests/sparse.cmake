# sparse: the cold-neuron FFN kernels (core/sparse.h), fast path then forced scalar.
add_executable(test_sparse ${CMAKE_SOURCE_DIR}/tests/test_sparse.c)
target_link_libraries(test_sparse PRIVATE hearth_core)
add_test(NAME sparse_kernels COMMAND test_sparse)
add_test(NAME sparse_kernels_scalar COMMAND test_sparse)
set_tests_properties(sparse_kernels_scalar PROPERTIES ENVIRONMENT "HEARTH_NO_SIMD=1")
set_tests_properties(sparse_kernels sparse_kernels_scalar PROPERTIES TIMEOUT 120)

# microbenchmark on the real model (not run by ctest): dense vs sparse FFN of
# one layer at decode, see its header comment
add_executable(bench_sparse ${CMAKE_SOURCE_DIR}/tests/bench/bench_sparse.c)
target_link_libraries(bench_sparse PRIVATE hearth_core)
