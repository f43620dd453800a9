/* Clocks and interruptible sleeps shared by capture, apply and the tools. */
#ifndef SLUICE_COMMON_CLOCK_H
#define SLUICE_COMMON_CLOCK_H

#include <signal.h>
#include <stdint.h>

/* sluice_clock_mono_ms is a monotonic clock in milliseconds, for intervals and deadlines. */
int64_t sluice_clock_mono_ms(void);

/* sluice_clock_unix_us is the wall clock in µs since the Unix epoch, as records carry it. */
int64_t sluice_clock_unix_us(void);

/* sluice_sleep_ms sleeps ms milliseconds, or less once *stop is set (checked every 100 ms). */
void sluice_sleep_ms(int ms, const volatile sig_atomic_t *stop);

#endif
