# topo: topology, placement, pin specs and binding (core/topo.c), on synthetic
# and XML topologies (tests/topo/*.xml) and on this machine.

add_executable(test_topo ${CMAKE_SOURCE_DIR}/tests/test_topo.c)
target_link_libraries(test_topo PRIVATE hearth_core PkgConfig::HWLOC)
add_test(NAME topo_unit COMMAND test_topo ${CMAKE_SOURCE_DIR}/tests/topo)
set_tests_properties(topo_unit PROPERTIES TIMEOUT 60)

# The same test with hwloc's built-in XML reader forced: the fixtures must load
# whether or not Debian's libhwloc-plugins (the libxml2 reader) is installed.
add_test(NAME topo_unit_builtin_xml COMMAND test_topo ${CMAKE_SOURCE_DIR}/tests/topo)
set_tests_properties(topo_unit_builtin_xml PROPERTIES TIMEOUT 60 ENVIRONMENT "HWLOC_LIBXML_IMPORT=0")
