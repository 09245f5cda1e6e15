/* The log hook. See log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

void log_msg(const struct logger *lg, int level, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	if (lg->fn == NULL || level > lg->level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	lg->fn(lg->arg, level, line);
}
