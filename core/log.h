/* log: one small logger for every hearth process.
 *
 * Every line carries the process role ("[coord]", "[gpu0]", "[cpu1]") so that
 * interleaved output of several processes on one terminal stays readable.
 * Logs go to stderr; stdout belongs to generated text. Timings are metrics,
 * not log lines. */
#ifndef HEARTH_LOG_H
#define HEARTH_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_set_role(const char *role); /* copied; at most 15 characters kept */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
