/* log.c: leveled logging through an installable sink. */
#include "log.h"

#include "squall.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* Set from any thread while the event loop logs: atomics, read once per line. */
static _Atomic(sq__log_sink) g_sink;
static _Atomic int g_level = SQ_LOG_INFO;

void sq__log_set(sq__log_sink sink, int level)
{
    g_sink = sink;
    g_level = level;
}

void sq__log_set_level(int level)
{
    g_level = level;
}

void sq_set_log(sq_log_fn fn, int level)
{
    sq__log_set(fn, level);
}

void sq__log(int level, const char *fmt, ...)
{
    sq__log_sink sink = atomic_load(&g_sink);
    if (sink == NULL || level > atomic_load(&g_level)) {
        return;
    }
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    sink(level, line);
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int sq__log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

const char *sq__log_level_name(int level)
{
    return level >= 0 && level < 4 ? level_names[level] : "?";
}
