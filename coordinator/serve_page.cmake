# serve_page.cmake: embeds the chat page into the binary.
#   cmake -DIN=coordinator/serve_page.html -DOUT=build/serve_page.c -P serve_page.cmake
# writes a C file defining serve_page_html[] (the bytes, NUL-terminated) and
# serve_page_html_len, which coordinator/serve_http.c serves at "/".
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n_hex)
math(EXPR n "${n_hex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}.tmp" "/* generated from serve_page.html by serve_page.cmake: do not edit */\n#include <stddef.h>\nconst unsigned char serve_page_html[] = {\n${bytes}0x00};\nconst size_t serve_page_html_len = ${n};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
