# insparse: input-major matrices and the products over active inputs
# (core/insparse.h), fast kernels then forced scalar.
add_executable(test_insparse ${CMAKE_SOURCE_DIR}/tests/test_insparse.c)
target_link_libraries(test_insparse PRIVATE hearth_core)
add_test(NAME insparse_kernels COMMAND test_insparse)
add_test(NAME insparse_kernels_scalar COMMAND test_insparse)
set_tests_properties(insparse_kernels_scalar PROPERTIES ENVIRONMENT "HEARTH_NO_SIMD=1")
set_tests_properties(insparse_kernels insparse_kernels_scalar PROPERTIES TIMEOUT 120)
