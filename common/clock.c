/* Clocks and interruptible sleeps shared by capture, apply and the tools. */
#include "clock.h"

#include <time.h>

int64_t
sluice_clock_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
sluice_clock_unix_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
sluice_sleep_ms(int ms, const volatile sig_atomic_t *stop)
{
	for (int left = ms; left > 0 && !*stop; left -= 100) {
		struct timespec ts = {0, (left < 100 ? left : 100) * 1000000L};
		nanosleep(&ts, NULL);
	}
}
