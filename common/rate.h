/* A rate limit (row changes and bytes per second) that makes its caller wait: a token bucket. */
#ifndef SLUICE_COMMON_RATE_H
#define SLUICE_COMMON_RATE_H

#include <signal.h>
#include <stdint.h>

typedef struct sluice_rate {
	uint64_t rows_per_s;  /* 0: unlimited */
	uint64_t bytes_per_s; /* 0: unlimited */
	double rows, bytes;   /* tokens left; a burst of at most one second */
	int64_t last_us;      /* monotonic µs of the last refill, 0: not started */
	uint64_t waited_ms;   /* time spent waiting, for metrics */
} sluice_rate;

/* sluice_rate_init sets the limits (0: unlimited) with a full bucket. */
void sluice_rate_init(sluice_rate *r, uint64_t rows_per_s, uint64_t bytes_per_s);

/*
 * sluice_rate_take accounts for rows row changes of bytes bytes, first
 * waiting (interruptibly, through stop) until the budget allows them.
 * A NULL r is unlimited.
 */
void sluice_rate_take(sluice_rate *r, uint64_t rows, uint64_t bytes,
		      const volatile sig_atomic_t *stop);

#endif
