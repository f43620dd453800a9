/* Unit tests of the conflict decision (apply/conflict.c) against conflicts.md's tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "conflict.h"

/* One row of a table: the change, the target's state, what must happen. */
typedef struct decide_case {
	char op;
	bool present, remote_newer, tombstone_newer, complete;
	sluice_write write;
	const char *conflict; /* NULL: no conflict */
	const char *resolution;
} decide_case;

#define W(x) SLUICE_WRITE_##x

static void
check_table(sluice_strategy s, const decide_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const decide_case *c = &cases[i];
		sluice_row_state st = {.present = c->present,
				       .remote_newer = c->remote_newer,
				       .tombstone_newer = c->tombstone_newer,
				       .complete = c->complete};
		sluice_decision d = sluice_conflict_decide(s, c->op, &st);
		print_message("%s case %zu: %c present=%d remote_newer=%d tomb=%d complete=%d\n",
			      sluice_strategy_name(s), i, c->op, c->present, c->remote_newer,
			      c->tombstone_newer, c->complete);
		assert_int_equal(d.write, c->write);
		if (c->conflict == NULL) {
			assert_int_equal(d.conflict, SLUICE_CONFLICT_NONE);
			assert_null(d.resolution);
		} else {
			assert_string_equal(sluice_conflict_name(d.conflict), c->conflict);
			assert_non_null(d.resolution);
			assert_string_equal(d.resolution, c->resolution);
		}
	}
}

/* conflicts.md, "Conflict cases (timestamp strategy)", row by row. */
static void
test_timestamp(void **state)
{
	(void)state;
	static const decide_case cases[] = {
		/* insert */
		{'I', false, false, false, true, W(INSERT), NULL, NULL},
		{'I', false, true, false, true, W(INSERT), NULL, NULL},
		{'I', true, true, false, true, W(UPDATE), "insert_exists", "remote"},
		{'I', true, false, false, true, W(NONE), "insert_exists", "kept_local"},
		{'I', false, false, true, true, W(NONE), "insert_deleted", "skipped"},
		/* update */
		{'U', true, true, false, false, W(UPDATE), NULL, NULL},
		{'U', true, false, false, true, W(NONE), "update_newer_local", "kept_local"},
		{'U', true, false, true, true, W(NONE), "update_newer_local", "kept_local"},
		{'U', false, false, false, true, W(INSERT), "update_missing", "inserted"},
		{'U', false, false, false, false, W(NONE), "update_missing", "skipped"},
		{'U', false, false, true, true, W(NONE), "update_deleted", "skipped"},
		{'U', false, false, true, false, W(NONE), "update_deleted", "skipped"},
		/* delete: a losing delete still keeps its tombstone */
		{'D', true, true, false, false, W(DELETE), NULL, NULL},
		{'D', true, false, false, false, W(TOMBSTONE), "delete_newer_local", "kept_local"},
		{'D', false, false, false, false, W(TOMBSTONE), "delete_missing", "tombstone"},
		{'D', false, false, true, false, W(TOMBSTONE), "delete_missing", "tombstone"},
	};
	check_table(SLUICE_STRATEGY_TIMESTAMP, cases, sizeof(cases) / sizeof(cases[0]));
}

/* replace: the stream is the source of truth; versions and tombstones do not matter. */
static void
test_replace(void **state)
{
	(void)state;
	static const decide_case cases[] = {
		{'I', false, false, false, true, W(INSERT), NULL, NULL},
		{'I', true, false, false, true, W(UPDATE), "insert_exists", "remote"},
		{'I', true, true, true, true, W(UPDATE), "insert_exists", "remote"},
		{'U', true, false, false, false, W(UPDATE), NULL, NULL},
		{'U', true, false, true, true, W(UPDATE), NULL, NULL},
		{'U', false, false, false, true, W(INSERT), "update_missing", "inserted"},
		{'U', false, false, true, true, W(INSERT), "update_missing", "inserted"},
		{'U', false, false, false, false, W(NONE), "update_missing", "skipped"},
		{'D', true, false, false, false, W(DELETE), NULL, NULL},
		{'D', false, false, false, false, W(NONE), "delete_missing", "skipped"},
	};
	check_table(SLUICE_STRATEGY_REPLACE, cases, sizeof(cases) / sizeof(cases[0]));
}

/* append: never overwrite or delete; only add what is missing. */
static void
test_append(void **state)
{
	(void)state;
	static const decide_case cases[] = {
		{'I', false, false, false, true, W(INSERT), NULL, NULL},
		{'I', true, true, false, true, W(NONE), "insert_exists", "kept_local"},
		{'U', true, true, false, true, W(NONE), NULL, NULL},
		{'U', false, false, false, true, W(INSERT), "update_missing", "inserted"},
		{'U', false, false, false, false, W(NONE), "update_missing", "skipped"},
		{'D', true, true, false, false, W(NONE), NULL, NULL},
		{'D', false, false, false, false, W(NONE), "delete_missing", "skipped"},
	};
	check_table(SLUICE_STRATEGY_APPEND, cases, sizeof(cases) / sizeof(cases[0]));
}

/* The total order of versions: time, then node name; unknown is oldest. */
static void
test_version_order(void **state)
{
	(void)state;
	sluice_version a = {true, 1000, "node_a"}, b = {true, 1000, "node_b"};
	sluice_version later = {true, 1001, "node_a"}, unknown = {false, 0, ""};
	sluice_version a2 = {true, 1000, "node_a"};
	assert_true(sluice_version_newer(&b, &a)); /* equal times: greater node wins */
	assert_false(sluice_version_newer(&a, &b));
	assert_true(sluice_version_newer(&later, &b)); /* time first */
	assert_false(sluice_version_newer(&b, &later));
	assert_false(sluice_version_newer(&a, &a2)); /* equal versions: neither is newer */
	assert_false(sluice_version_newer(&a2, &a));
	assert_true(sluice_version_newer(&a, &unknown));
	assert_false(sluice_version_newer(&unknown, &a));
	assert_false(sluice_version_newer(&unknown, &unknown));
	sluice_version neg = {true, -5, "z"}; /* before 1970 is still known */
	assert_true(sluice_version_newer(&neg, &unknown));
	assert_true(sluice_version_newer(&a, &neg));
	sluice_version bytes = {true, 1000, "node_\xc3\xa9"}; /* bytewise, not locale */
	assert_true(sluice_version_newer(&bytes, &b));
}

static void
test_names(void **state)
{
	(void)state;
	assert_string_equal(sluice_conflict_name(SLUICE_CONFLICT_INSERT_EXISTS), "insert_exists");
	assert_string_equal(sluice_conflict_name(SLUICE_CONFLICT_DELETE_MISSING), "delete_missing");
	assert_string_equal(sluice_conflict_name(SLUICE_CONFLICT_NONE), "unknown");
	assert_string_equal(sluice_conflict_name(SLUICE_CONFLICT_COUNT), "unknown");
	assert_string_equal(sluice_strategy_name(SLUICE_STRATEGY_TIMESTAMP), "timestamp");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timestamp), cmocka_unit_test(test_replace),
		cmocka_unit_test(test_append),    cmocka_unit_test(test_version_order),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
