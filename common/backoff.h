/* Capped exponential backoff with jitter, for retries of transient failures. */
#ifndef SLUICE_COMMON_BACKOFF_H
#define SLUICE_COMMON_BACKOFF_H

/*
 * sluice_backoff_ms returns the wait before retry number attempt (1, 2, ...):
 * base_ms doubled per attempt up to cap_ms, then a random share of it taken
 * away (between 0 and half), so that processes that failed together do not
 * retry in step.
 * @return milliseconds, between base_ms / 2 and cap_ms.
 */
int sluice_backoff_ms(int attempt, int base_ms, int cap_ms);

#endif
