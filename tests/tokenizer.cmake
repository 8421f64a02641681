# Tokenizer and chat templates (core/tokenizer.c, core/unicode.c, core/chat.c).
add_executable(test_tokenizer ${CMAKE_SOURCE_DIR}/tests/test_tokenizer.c)
target_link_libraries(test_tokenizer PRIVATE hearth_core)
add_test(NAME tokenizer_unit COMMAND test_tokenizer)
set_tests_properties(tokenizer_unit PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)

add_executable(tokenize_dump ${CMAKE_SOURCE_DIR}/tests/tokenize_dump.c)
target_link_libraries(tokenize_dump PRIVATE hearth_core)

find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  add_test(NAME tokenizer_hf
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/test_tokenizer_hf.py
                   $<TARGET_FILE:tokenize_dump> ${CMAKE_SOURCE_DIR}/tests/tokenizer_strings.txt)
  set_tests_properties(tokenizer_hf PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
  add_test(NAME chat_templates
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/test_tokenizer_hf.py --chat
                   $<TARGET_FILE:tokenize_dump>)
  set_tests_properties(chat_templates PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
endif()
