# ipc/ and proto/: shm regions, sessions, rings + doorbells, control channel.
# Every test here is quick (seconds) and needs no GPU and no network.
if(TARGET hearth_ipc)
  add_executable(test_ring ${CMAKE_SOURCE_DIR}/tests/test_ring.c)
  target_link_libraries(test_ring PRIVATE hearth_ipc)
  add_test(NAME ipc_ring COMMAND test_ring)
  set_tests_properties(ipc_ring PROPERTIES TIMEOUT 120)

  add_executable(test_shm ${CMAKE_SOURCE_DIR}/tests/test_shm.c)
  target_link_libraries(test_shm PRIVATE hearth_ipc)
  add_test(NAME ipc_shm COMMAND test_shm)
  set_tests_properties(ipc_shm PROPERTIES TIMEOUT 60)

  add_executable(test_ctl ${CMAKE_SOURCE_DIR}/tests/test_ctl.c)
  target_link_libraries(test_ctl PRIVATE hearth_ipc)
  add_test(NAME ipc_ctl COMMAND test_ctl)
  set_tests_properties(ipc_ctl PROPERTIES TIMEOUT 60)

  add_executable(bench_ring ${CMAKE_SOURCE_DIR}/tests/bench/bench_ring.c)
  target_link_libraries(bench_ring PRIVATE hearth_ipc)
  add_test(NAME ipc_bench_smoke COMMAND bench_ring --smoke)
  set_tests_properties(ipc_bench_smoke PROPERTIES TIMEOUT 30)

  # The same ring test with two threads under ThreadSanitizer. TSan cannot
  # share a binary with ASan, so only in builds without HEARTH_SANITIZE; the
  # ipc sources are compiled again, instrumented (libzmq is not, which is
  # fine: the ring's ordering does not rely on it).
  if(NOT HEARTH_SANITIZE)
    include(CheckCSourceRuns)
    set(CMAKE_REQUIRED_FLAGS "-fsanitize=thread")
    set(CMAKE_REQUIRED_LINK_OPTIONS "-fsanitize=thread")
    check_c_source_runs("int main(void){return 0;}" HEARTH_HAVE_TSAN)
    unset(CMAKE_REQUIRED_FLAGS)
    unset(CMAKE_REQUIRED_LINK_OPTIONS)
    if(HEARTH_HAVE_TSAN)
      add_executable(test_ring_tsan ${CMAKE_SOURCE_DIR}/tests/test_ring.c
        ${CMAKE_SOURCE_DIR}/ipc/ring.c ${CMAKE_SOURCE_DIR}/ipc/idle.c
        ${CMAKE_SOURCE_DIR}/ipc/doorbell.c ${CMAKE_SOURCE_DIR}/ipc/shm.c
        ${CMAKE_SOURCE_DIR}/ipc/session.c)
      target_include_directories(test_ring_tsan PRIVATE ${CMAKE_SOURCE_DIR}/ipc ${CMAKE_SOURCE_DIR}/core)
      target_compile_options(test_ring_tsan PRIVATE -fsanitize=thread -O1 -g)
      target_link_options(test_ring_tsan PRIVATE -fsanitize=thread)
      target_link_libraries(test_ring_tsan PRIVATE PkgConfig::ZMQ Threads::Threads)
      add_test(NAME ipc_ring_tsan COMMAND test_ring_tsan --threads --scale 0.05)
      set_tests_properties(ipc_ring_tsan PROPERTIES TIMEOUT 120
                           ENVIRONMENT "TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1")
    else()
      message(STATUS "ipc: compiler cannot run -fsanitize=thread programs here; ipc_ring_tsan skipped")
    endif()
  endif()
endif()
