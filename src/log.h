/*
 * Logging through the application's optional hook (bs_config_t.log);
 * silent without one. Any thread; the hook must not call back into bs_*.
 */
#ifndef BS_LOG_H
#define BS_LOG_H

#include "buffstreams.h"

struct logger {
	bs_log_fn fn;
	void *arg;
	int level;
};

void log_msg(const struct logger *lg, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
