# predictor: activation predictors (low-rank MLP), their training, cutoff and run-time form.
add_executable(test_predictor ${CMAKE_SOURCE_DIR}/tests/test_predictor.c)
target_link_libraries(test_predictor PRIVATE hearth_core)
foreach(t grad learn cutoff determ rt rank errors)
  add_test(NAME predictor_${t} COMMAND test_predictor ${t})
endforeach()
# the same with the scalar kernels (HEARTH_NO_SIMD=1): they round differently
# (no FMA), so these check them on their own terms
foreach(t grad determ rt)
  add_test(NAME predictor_${t}_scalar COMMAND test_predictor ${t})
  set_tests_properties(predictor_${t}_scalar PROPERTIES ENVIRONMENT "HEARTH_NO_SIMD=1")
endforeach()
# a full-size layer (dim 576, n_out 1536, 3000 samples, rank 64) with 1 and 2
# threads; prints the training time (no assertion on it). 2 epochs here to stay
# quick; `test_predictor timing 10` for the real number.
add_test(NAME predictor_timing COMMAND test_predictor timing 2)
set_tests_properties(predictor_grad predictor_learn predictor_cutoff predictor_determ predictor_rt predictor_rank
                     predictor_errors predictor_grad_scalar predictor_determ_scalar predictor_rt_scalar
                     predictor_timing PROPERTIES TIMEOUT 300)
