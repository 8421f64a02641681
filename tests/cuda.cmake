# cuda: the CUDA kernels and backend (only where cuda/ built hearth_cuda).
# Without a device both tests exit 77 ("SKIP: no CUDA device"): skipped.
if(TARGET hearth_cuda)
  add_executable(test_cuda ${CMAKE_SOURCE_DIR}/tests/test_cuda.c ${CMAKE_SOURCE_DIR}/gpu-worker/backend_cuda.c
                           ${CMAKE_SOURCE_DIR}/gpu-worker/backend_host.c)
  target_include_directories(test_cuda PRIVATE ${CMAKE_SOURCE_DIR}/gpu-worker)
  target_link_libraries(test_cuda PRIVATE hearth_cuda hearth_core)
  add_test(NAME cuda_kernels COMMAND test_cuda kernels)
  add_test(NAME cuda_backend COMMAND test_cuda backend ${HEARTH_TEST_MODEL})
  set_tests_properties(cuda_kernels cuda_backend PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()
