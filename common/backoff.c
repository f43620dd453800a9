/* Capped exponential backoff with jitter. */
#include "backoff.h"

#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int
sluice_backoff_ms(int attempt, int base_ms, int cap_ms)
{
	static unsigned int seed;
	if (seed == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		seed = (unsigned int)ts.tv_nsec ^ ((unsigned int)getpid() << 16) ^ 1u;
	}
	int64_t d = base_ms > 0 ? base_ms : 1;
	for (int i = 1; i < attempt && d < cap_ms; i++)
		d *= 2;
	if (d > cap_ms)
		d = cap_ms;
	int64_t half = d / 2;
	if (half > 0)
		d -= (int64_t)(rand_r(&seed) % (int)(half + 1));
	return (int)d;
}
