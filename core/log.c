/* log: see log.h. One write(2) per line so that lines of several processes
 * sharing a terminal never interleave mid-line. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char g_role[16] = "hearth";
static enum log_level g_level = LOG_WARN;

void log_set_role(const char *role) {
    snprintf(g_role, sizeof g_role, "%s", role);
}

void log_set_level(enum log_level level) { g_level = level; }

enum log_level log_get_level(void) { return g_level; }

void log_msg(enum log_level level, const char *fmt, ...) {
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (level > g_level) return;
    char line[2048];
    int n = snprintf(line, sizeof line, "[%s] %s: ", g_role, names[level]);
    if (n < 0) return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    size_t len = strlen(line);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
