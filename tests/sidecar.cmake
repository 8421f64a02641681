# sidecar: the per-model GGUF of `hearth profile` / `hearth plan` (core/sidecar.h),
# and the calibration/evaluation texts of deploy/corpus.sh.
#
# sidecar_roundtrip: save/load of profile-only and planned sidecars of awkward
# shapes, every field bit for bit; sidecar_errors: each invalid file refused
# with its own message, sidecar_check_model/_planned; sidecar_truncate: every
# truncation of a small file refused cleanly; sidecar_save: unwritable paths,
# atomic replacement; sidecar_hostile: a tiny file claiming a huge shape is
# refused before allocating for it (RLIMIT_AS child; skipped under ASan).
# Rerun one with another seed: `test_sidecar CASE DIR SEED`.
add_executable(test_sidecar ${CMAKE_SOURCE_DIR}/tests/test_sidecar.c)
target_link_libraries(test_sidecar PRIVATE hearth_core m)
foreach(t roundtrip errors truncate save hostile)
  add_test(NAME sidecar_${t} COMMAND test_sidecar ${t} ${CMAKE_CURRENT_BINARY_DIR}/sidecar_tmp)
endforeach()
set_tests_properties(sidecar_roundtrip sidecar_errors sidecar_truncate sidecar_save sidecar_hostile
                     PROPERTIES TIMEOUT 120)
set_tests_properties(sidecar_hostile PROPERTIES SKIP_RETURN_CODE 77)

# corpus_disjoint: deploy/corpus.sh into a temporary folder; both texts >= 1 MB
# of UTF-8, no shared run of 8 words, and the raw fortunes do share some with
# the evaluation text (so the filter is doing work). Skipped (77) without the
# fortunes / jargon-text packages.
if(NOT HEARTH_PYTHON)
  set(HEARTH_PYTHON python3)
endif()
add_test(NAME corpus_disjoint
         COMMAND ${HEARTH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_corpus.py ${CMAKE_SOURCE_DIR}/deploy/corpus.sh)
set_tests_properties(corpus_disjoint PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
