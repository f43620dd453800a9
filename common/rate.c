/* A rate limit (row changes and bytes per second) that makes its caller wait: a token bucket. */
#include "rate.h"

#include <time.h>

#include "clock.h"

static int64_t
rate_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
sluice_rate_init(sluice_rate *r, uint64_t rows_per_s, uint64_t bytes_per_s)
{
	r->rows_per_s = rows_per_s;
	r->bytes_per_s = bytes_per_s;
	r->rows = (double)rows_per_s;
	r->bytes = (double)bytes_per_s;
	r->last_us = 0;
	r->waited_ms = 0;
}

/* rate_refill adds the tokens earned since the last refill, up to one second's worth. */
static void
rate_refill(sluice_rate *r)
{
	int64_t now = rate_now_us();
	if (r->last_us == 0)
		r->last_us = now;
	double dt = (double)(now - r->last_us) / 1e6;
	r->last_us = now;
	r->rows += dt * (double)r->rows_per_s;
	if (r->rows > (double)r->rows_per_s)
		r->rows = (double)r->rows_per_s;
	r->bytes += dt * (double)r->bytes_per_s;
	if (r->bytes > (double)r->bytes_per_s)
		r->bytes = (double)r->bytes_per_s;
}

void
sluice_rate_take(sluice_rate *r, uint64_t rows, uint64_t bytes, const volatile sig_atomic_t *stop)
{
	if (r == NULL || (r->rows_per_s == 0 && r->bytes_per_s == 0))
		return;
	rate_refill(r);
	if (r->rows_per_s)
		r->rows -= (double)rows;
	if (r->bytes_per_s)
		r->bytes -= (double)bytes;
	/* In debt: wait until the bucket is back at zero (a large item waits longer). */
	double wait_s = 0;
	if (r->rows_per_s && r->rows < 0)
		wait_s = -r->rows / (double)r->rows_per_s;
	if (r->bytes_per_s && r->bytes < 0 && -r->bytes / (double)r->bytes_per_s > wait_s)
		wait_s = -r->bytes / (double)r->bytes_per_s;
	if (wait_s <= 0.001)
		return;
	int ms = (int)(wait_s * 1000) + 1;
	sluice_sleep_ms(ms, stop);
	r->waited_ms += (uint64_t)ms;
	rate_refill(r);
}
