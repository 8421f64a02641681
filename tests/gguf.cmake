# GGUF reader/writer tests (core/gguf.c). Run: ctest -R gguf
# The fuzz seed corpus is made by the writer: test_gguf gen-corpus tests/fuzz/gguf_corpus
add_executable(test_gguf ${CMAKE_SOURCE_DIR}/tests/test_gguf.c)
target_link_libraries(test_gguf PRIVATE hearth_core)
foreach(t roundtrip model corrupt errors writer)
  add_test(NAME gguf_${t} COMMAND test_gguf ${t})
endforeach()
set_tests_properties(gguf_model PROPERTIES SKIP_RETURN_CODE 77)

set(GGUF_CORPUS ${CMAKE_SOURCE_DIR}/tests/fuzz/gguf_corpus)
if(HEARTH_FUZZ)
  set(HEARTH_FUZZ_SECONDS 60 CACHE STRING "seconds each libFuzzer test runs")
  # The reader is compiled into the target itself so that it carries the
  # fuzzer's coverage instrumentation (hearth_core does not).
  add_executable(fuzz_gguf ${CMAKE_SOURCE_DIR}/tests/fuzz_gguf.c ${CMAKE_SOURCE_DIR}/core/gguf.c
                           ${CMAKE_SOURCE_DIR}/core/types.c)
  target_include_directories(fuzz_gguf PRIVATE ${CMAKE_SOURCE_DIR}/core)
  target_compile_options(fuzz_gguf PRIVATE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
  target_link_options(fuzz_gguf PRIVATE -fsanitize=fuzzer,address,undefined)
  # Fuzz a copy of the seed corpus: new inputs never land in the source tree.
  add_test(NAME gguf_fuzz
           COMMAND sh -c "rm -rf gguf_corpus && mkdir gguf_corpus && cp '${GGUF_CORPUS}'/* gguf_corpus/ && \
exec '$<TARGET_FILE:fuzz_gguf>' -max_total_time=${HEARTH_FUZZ_SECONDS} -timeout=10 -print_final_stats=1 gguf_corpus"
           WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  math(EXPR GGUF_FUZZ_TIMEOUT "${HEARTH_FUZZ_SECONDS} + 120")
  set_tests_properties(gguf_fuzz PROPERTIES TIMEOUT ${GGUF_FUZZ_TIMEOUT})
else()
  # Without libFuzzer: the same target code, fed the seed corpus (and every
  # truncation of each seed) by a plain main().
  add_executable(fuzz_gguf_replay ${CMAKE_SOURCE_DIR}/tests/fuzz_gguf.c)
  target_compile_definitions(fuzz_gguf_replay PRIVATE GGUF_FUZZ_REPLAY)
  target_link_libraries(fuzz_gguf_replay PRIVATE hearth_core)
  add_test(NAME gguf_fuzz_replay COMMAND fuzz_gguf_replay ${GGUF_CORPUS})
endif()
