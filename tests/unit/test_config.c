/* The service configuration: schema errors with line and column, all at once; secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

static sluice_config *
parse(const char *text, sluice_buf *errors, size_t *n)
{
	sluice_buf_reset(errors);
	return sluice_config_parse("t.yaml", text, strlen(text), errors, n);
}

static bool
has(const sluice_buf *b, const char *needle)
{
	if (b->data == NULL)
		return false;
	char *s = strndup((const char *)b->data, b->len);
	bool found = strstr(s, needle) != NULL;
	if (!found)
		fprintf(stderr, "missing \"%s\" in:\n%s", needle, s);
	free(s);
	return found;
}

static const char *const good = "listen: 127.0.0.1:9187\n"
				"readiness:\n"
				"  max_lag: 30s\n"
				"keys:\n"
				"  n1:\n"
				"    public_file: /dev/null\n"
				"    secret_file: /dev/null\n"
				"stores:\n"
				"  local:\n"
				"    url: /tmp/store\n"
				"pipelines:\n"
				"  cap1:\n"
				"    capture:\n"
				"      source_env: SLUICE_TEST_SOURCE\n"
				"      store: local\n"
				"      stream: s1\n"
				"      key: n1\n"
				"      create: true\n"
				"      max_rate: {rows_per_second: 1000}\n"
				"  app1:\n"
				"    apply:\n"
				"      target: host=/tmp dbname=x\n"
				"      store: local\n"
				"      stream: s1\n"
				"      trust: [n1]\n"
				"      strategy: timestamp\n"
				"      include: public.*\n";

static void
test_good(void **state)
{
	(void)state;
	setenv("SLUICE_TEST_SOURCE", "host=/tmp dbname=y", 1);
	sluice_buf errors = {0};
	size_t n = 99;
	sluice_config *c = parse(good, &errors, &n);
	assert_non_null(c);
	assert_int_equal(n, 0);
	assert_string_equal(c->listen, "127.0.0.1:9187");
	assert_int_equal(c->ready_max_lag_ms, 30000);
	assert_int_equal(c->npipelines, 2);
	const sluice_config_pipeline *cap = sluice_config_pipeline_find(c, "cap1");
	assert_non_null(cap);
	assert_int_equal(cap->kind, SLUICE_PIPELINE_CAPTURE);
	assert_true(cap->create);
	assert_true(cap->heartbeat);
	assert_int_equal(cap->max_rows_per_s, 1000);
	assert_null(cap->conn.value);
	assert_string_equal(cap->conn.env, "SLUICE_TEST_SOURCE");
	const sluice_config_pipeline *app = sluice_config_pipeline_find(c, "app1");
	assert_int_equal(app->kind, SLUICE_PIPELINE_APPLY);
	assert_string_equal(app->strategy, "timestamp");
	assert_int_equal(app->include.n, 1);
	assert_string_equal(app->conn.value, "host=/tmp dbname=x");
	char *v = NULL;
	char why[128];
	assert_true(sluice_config_secret_read(&cap->conn, &v, why, sizeof(why)));
	assert_string_equal(v, "host=/tmp dbname=y");
	free(v);

	/* A changed secret changes the fingerprint; a changed other pipeline does not. */
	char fp_cap[33], fp_app[33];
	memcpy(fp_cap, cap->fingerprint, sizeof(fp_cap));
	memcpy(fp_app, app->fingerprint, sizeof(fp_app));
	sluice_config_free(c);
	setenv("SLUICE_TEST_SOURCE", "host=/tmp dbname=z", 1);
	c = parse(good, &errors, &n);
	assert_non_null(c);
	assert_string_not_equal(sluice_config_pipeline_find(c, "cap1")->fingerprint, fp_cap);
	assert_string_equal(sluice_config_pipeline_find(c, "app1")->fingerprint, fp_app);
	sluice_config_free(c);
	sluice_buf_free(&errors);
}

/* Every kind of problem, each with its line and column, in one pass. */
static void
test_errors(void **state)
{
	(void)state;
	unsetenv("SLUICE_TEST_MISSING");
	const char *text = "listen: 127.0.0.1:9187\n"                /* 1 */
			   "colour: blue\n"                          /* 2: unknown top-level key */
			   "keys:\n"                                 /* 3 */
			   "  n1:\n"                                 /* 4 */
			   "    public_file: /dev/null\n"            /* 5 */
			   "stores:\n"                               /* 6 */
			   "  local:\n"                              /* 7 */
			   "    url: /tmp/store\n"                   /* 8 */
			   "    segment_seconds: soon\n"             /* 9: wrong type */
			   "pipelines:\n"                            /* 10 */
			   "  cap1:\n"                               /* 11 */
			   "    capture:\n"                          /* 12 */
			   "      store: local\n"                    /* 13 */
			   "      stream: s1\n"                      /* 14 */
			   "      key: n1\n"                         /* 15: no secret_file */
			   "      create: yes please\n"              /* 16: not a bool */
			   "      sluggish: true\n"                  /* 17: unknown key */
			   "  app1:\n"                               /* 18 */
			   "    apply:\n"                            /* 19 */
			   "      target_env: SLUICE_TEST_MISSING\n" /* 20: unset variable */
			   "      store: nowhere\n"                  /* 21: unknown store */
			   "      stream: s1\n"                      /* 22 */
			   "      trust: [n1]\n"                     /* 23 */
			   "      strategy: newest\n"                /* 24: bad enum */
			   "      include: {a: b}\n"                 /* 25: wrong type */
			   "  app2:\n"                               /* 26 */
			   "    apply:\n"                            /* 27 */
			   "      target: postgresql://u:secret@h/db\n" /* 28: inline password */
			   "      store: local\n"
			   "      stream: s1\n"
			   "      trust: [n1]\n"
			   "      readiness: {max_lag: 1 minute}\n"; /* 32: bad duration */
	sluice_buf errors = {0};
	size_t n = 0;
	sluice_config *c = parse(text, &errors, &n);
	assert_null(c);
	assert_true(has(&errors, "t.yaml:2:1: unknown key \"colour\" at the top level"));
	assert_true(has(&errors, "t.yaml:9:22: \"segment_seconds\" must be a whole number"));
	assert_true(has(&errors, "t.yaml:13:7: capture pipeline \"cap1\" needs \"source\" (or its "
				 "_file or _env form)"));
	assert_true(has(&errors, "key \"n1\" has no secret_file to sign with"));
	assert_true(has(&errors, "t.yaml:16:15: \"create\" must be true or false"));
	assert_true(has(&errors, "t.yaml:17:7: unknown key \"sluggish\" in capture pipeline"));
	assert_true(has(&errors,
			"t.yaml:20:19: \"target_env\": environment variable SLUICE_TEST_MISSING "
			"is not set"));
	assert_true(has(&errors, "apply pipeline \"app1\": no store named \"nowhere\""));
	assert_true(has(&errors, "t.yaml:24:17: \"strategy\" must be one of replace, append, "
				 "timestamp, not \"newest\""));
	assert_true(has(&errors, "t.yaml:25:16: \"include\" must be a list of strings, not a "
				 "mapping"));
	assert_true(has(&errors, "t.yaml:28:15: \"target\" holds a password"));
	assert_false(has(&errors, "secret@"));
	assert_true(has(&errors, "t.yaml:32:28: \"max_lag\" must be a duration"));
	assert_int_equal(n, 12);
	sluice_buf_free(&errors);
}

static void
test_yaml_syntax(void **state)
{
	(void)state;
	sluice_buf errors = {0};
	size_t n = 0;
	assert_null(parse("pipelines:\n  a: [1, 2\n", &errors, &n));
	assert_int_equal(n, 1);
	assert_true(has(&errors, "t.yaml:3:1: did not find expected ',' or ']'"));
	assert_null(parse("", &errors, &n));
	assert_true(has(&errors, "t.yaml:1:1: the configuration is empty"));
	assert_null(parse("- a\n", &errors, &n));
	assert_true(has(&errors, "must be a mapping"));
	assert_null(parse("pipelines:\n  x:\n    replicate: {}\n", &errors, &n));
	assert_true(has(&errors, "t.yaml:3:5: pipeline \"x\": unknown kind \"replicate\""));
	assert_null(parse("pipelines:\n  a b:\n    apply: {}\n", &errors, &n));
	assert_true(has(&errors, "t.yaml:2:3: invalid name \"a b\""));
	assert_null(parse("stores:\n  s:\n    url: /x\n    secret_access_key: abc\n"
			  "pipelines: {}\n",
			  &errors, &n));
	assert_true(has(&errors, "t.yaml:4:24: \"secret_access_key\" is a secret"));
	assert_false(has(&errors, "abc"));
	sluice_buf_free(&errors);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_yaml_syntax),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
