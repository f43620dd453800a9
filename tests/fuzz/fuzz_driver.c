/*
 * Regression driver for builds without libFuzzer: runs every file named on the
 * command line, and every regular file in the directories named (recursively,
 * in name order), through LLVMFuzzerTestOneInput once. Arguments starting
 * with '-' are ignored so that libFuzzer options can be passed unchanged.
 * Exits 0 when at least one input ran (a failing input aborts), 1 otherwise.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"

static size_t driver_runs;

/* driver_run_file feeds one file to the target, in a buffer of exactly its size. */
static int
driver_run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "fuzz driver: %s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t cap = 4096, len = 0;
	uint8_t *buf = malloc(cap);
	if (buf == NULL)
		abort();
	size_t n;
	while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			if (buf == NULL)
				abort();
		}
	}
	bool failed = ferror(f) != 0;
	fclose(f);
	if (failed) {
		fprintf(stderr, "fuzz driver: could not read %s\n", path);
		free(buf);
		return -1;
	}
	/* An exact-size copy lets AddressSanitizer catch reads past the input. */
	uint8_t *exact = malloc(len ? len : 1);
	if (exact == NULL)
		abort();
	if (len > 0)
		memcpy(exact, buf, len);
	free(buf);
	LLVMFuzzerTestOneInput(exact, len);
	free(exact);
	driver_runs++;
	return 0;
}

static int
driver_name_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int
driver_run_path(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		fprintf(stderr, "fuzz driver: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return S_ISREG(st.st_mode) ? driver_run_file(path) : 0;
	struct dirent **names = NULL;
	int n = scandir(path, &names, NULL, driver_name_cmp);
	if (n < 0) {
		fprintf(stderr, "fuzz driver: %s: %s\n", path, strerror(errno));
		return -1;
	}
	int rc = 0;
	for (int i = 0; i < n; i++) {
		const char *name = names[i]->d_name;
		if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
			size_t len = strlen(path) + strlen(name) + 2;
			char *child = malloc(len);
			if (child == NULL)
				abort();
			snprintf(child, len, "%s/%s", path, name);
			if (driver_run_path(child) != 0)
				rc = -1;
			free(child);
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

int
main(int argc, char **argv)
{
	int rc = 0;
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			continue;
		if (driver_run_path(argv[i]) != 0)
			rc = 1;
	}
	printf("fuzz driver: ran %zu input(s)\n", driver_runs);
	if (driver_runs == 0) {
		fprintf(stderr, "fuzz driver: no inputs (usage: %s FILE-OR-DIR...)\n", argv[0]);
		return 1;
	}
	return rc;
}
