# forward: the dense pass's test tools. forward_dump feeds tests/test_forward_ref.py
# (registered in sampler.cmake), which compares it with the NumPy reference.
add_executable(forward_dump ${CMAKE_SOURCE_DIR}/tests/forward_dump.c)
target_link_libraries(forward_dump PRIVATE hearth_core)
