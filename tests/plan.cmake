# plan: the hot-neuron placement ILP (core/plan.h, GLPK) and the firing-frequency
# plot (coordinator/plot.h).
# plan_random: GLPK against exhaustive search on 400 tiny random instances (seed
# printed; rerun one with `test_plan random SEED`); plan_cases: hand-made
# instances, greedy beaten; plan_full: 30 x 1536 power-law instance, timed;
# plan_errors: invalid input and its exact messages.
add_executable(test_plan ${CMAKE_SOURCE_DIR}/tests/test_plan.c)
target_link_libraries(test_plan PRIVATE hearth_core m)
add_test(NAME plan_random COMMAND test_plan random)
add_test(NAME plan_cases COMMAND test_plan cases)
add_test(NAME plan_full COMMAND test_plan full)
add_test(NAME plan_errors COMMAND test_plan errors)
set_tests_properties(plan_random plan_cases plan_full plan_errors PROPERTIES TIMEOUT 120)

# plan_plot: the SVG for synthetic data (well-formed XML, one path per layer),
# write errors (/dev/full) and an unwritable path. plot.c is compiled in here
# rather than taken from hearth_coord so that this test needs only hearth_core.
add_executable(test_plot ${CMAKE_SOURCE_DIR}/tests/test_plot.c ${CMAKE_SOURCE_DIR}/coordinator/plot.c)
target_include_directories(test_plot PRIVATE ${CMAKE_SOURCE_DIR}/coordinator)
target_link_libraries(test_plot PRIVATE hearth_core m)
add_test(NAME plan_plot COMMAND test_plot ${CMAKE_CURRENT_BINARY_DIR}/plan_plot_tmp)
set_tests_properties(plan_plot PROPERTIES TIMEOUT 60)
