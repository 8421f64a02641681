# Tokenizer and chat templates (core/tokenizer.c, core/unicode.c, core/chat.c).
add_executable(test_tokenizer ${CMAKE_SOURCE_DIR}/tests/test_tokenizer.c)
target_link_libraries(test_tokenizer PRIVATE hearth_core)
add_test(NAME tokenizer_unit COMMAND test_tokenizer)
set_tests_properties(tokenizer_unit PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)

add_executable(tokenize_dump ${CMAKE_SOURCE_DIR}/tests/tokenize_dump.c)
target_link_libraries(tokenize_dump PRIVATE hearth_core)

# The oracles run with HEARTH_PYTHON, the venv deploy/setup.sh fills (gguf,
# tokenizers, jinja2), never with whatever python3 the system has.
add_test(NAME tokenizer_hf
         COMMAND ${HEARTH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_tokenizer_hf.py
                 $<TARGET_FILE:tokenize_dump> ${CMAKE_SOURCE_DIR}/tests/tokenizer_strings.txt)
set_tests_properties(tokenizer_hf PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
add_test(NAME chat_templates
         COMMAND ${HEARTH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_tokenizer_hf.py --chat
                 $<TARGET_FILE:tokenize_dump>)
set_tests_properties(chat_templates PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
