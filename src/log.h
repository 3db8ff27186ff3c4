/* log.h: leveled logging through a sink the application installs; the library never prints on
 * its own (with no sink installed, log lines are dropped). */
#ifndef SQ_LOG_H
#define SQ_LOG_H

enum sq_log_level { SQ_LOG_ERROR = 0, SQ_LOG_WARN = 1, SQ_LOG_INFO = 2, SQ_LOG_DEBUG = 3 };

typedef void (*sq__log_sink)(int level, const char *line);

/* Installs the sink and the most verbose level passed to it (process-wide). */
void sq__log_set(sq__log_sink sink, int level);
/* Changes only the level. */
void sq__log_set_level(int level);
/* Formats and passes one line to the sink when `level` is enabled. Thread-safe if the sink is. */
void sq__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parses "error", "warn", "info" or "debug"; returns -1 for anything else. */
int sq__log_level_parse(const char *s);
const char *sq__log_level_name(int level);

#endif
