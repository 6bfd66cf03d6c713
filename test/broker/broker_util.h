/*
 * broker_util.h
 *    Small helpers shared by the test broker and the test consumer.
 *
 * test/broker/broker_util.h
 */
#ifndef OUTBOX_BROKER_UTIL_H
#define OUTBOX_BROKER_UTIL_H

#include <errno.h>
#include <stdlib.h>

/* Parse a whole string as a decimal integer within [min, max]. */
static inline int
parse_long(const char *s, long min, long max, long *out)
{
	char	   *end;
	long		v;

	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

#endif
