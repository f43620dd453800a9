/* Unit tests of net change per key (apply/netchange.c): the folding rules of grouped apply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "netchange.h"

/* A table (id key, a, b). */
static const bool key3[3] = {true, false, false};

/* row builds a row image: NULL values with *_absent are unknown (unchanged TOAST). */
typedef struct trow {
	const char *v[3];
	bool present[3];
	sluice_net_row r;
} trow;

static trow *
mk(trow *t, const char *id, const char *a, const char *b, bool a_known, bool b_known)
{
	t->v[0] = id;
	t->v[1] = a;
	t->v[2] = b;
	t->present[0] = true;
	t->present[1] = a_known;
	t->present[2] = b_known;
	t->r = (sluice_net_row){.v = t->v, .present = t->present, .complete = a_known && b_known};
	return t;
}

static bool
add(sluice_net *n, uint32_t rel, char op, const trow *newr, const trow *oldr)
{
	return sluice_net_add(n, rel, 3, key3, op, newr ? &newr->r : NULL, oldr ? &oldr->r : NULL);
}

/* find returns the entry of rel and id (key JSON ["id"]), or NULL. */
static const sluice_net_entry *
find(const sluice_net *n, uint32_t rel, const char *id)
{
	char key[64];
	snprintf(key, sizeof(key), "[\"%s\"]", id);
	for (size_t i = 0; i < n->n; i++)
		if (n->entries[i]->rel == rel && strcmp(n->entries[i]->key, key) == 0)
			return n->entries[i];
	return NULL;
}

static void
assert_val(const sluice_net_entry *e, int i, const char *want)
{
	assert_true(e->present[i]);
	if (want == NULL)
		assert_null(e->v[i]);
	else
		assert_string_equal(e->v[i], want);
}

static void
test_insert_then_updates(void **state)
{
	(void)state;
	sluice_net n;
	sluice_net_init(&n);
	trow r1, r2, r3;
	assert_true(add(&n, 0, 'I', mk(&r1, "1", "x", "big", true, true), NULL));
	/* b unchanged (TOAST): the insert's value stays */
	assert_true(add(&n, 0, 'U', mk(&r2, "1", "y", NULL, true, false), NULL));
	assert_true(add(&n, 0, 'U', mk(&r3, "1", NULL, NULL, true, false), NULL));
	assert_int_equal(n.n, 1);
	const sluice_net_entry *e = find(&n, 0, "1");
	assert_int_equal(sluice_net_kind_of(e), SLUICE_NET_INSERT);
	assert_val(e, 0, "1");
	assert_val(e, 1, NULL); /* set to SQL NULL by the last update */
	assert_val(e, 2, "big");
	sluice_net_free(&n);
}

static void
test_partial_updates_merge(void **state)
{
	(void)state;
	sluice_net n;
	sluice_net_init(&n);
	trow r1, r2;
	assert_true(add(&n, 0, 'U', mk(&r1, "7", "a1", NULL, true, false), NULL));
	assert_true(add(&n, 0, 'U', mk(&r2, "7", "a2", NULL, true, false), NULL));
	const sluice_net_entry *e = find(&n, 0, "7");
	assert_int_equal(sluice_net_kind_of(e), SLUICE_NET_UPDATE);
	assert_val(e, 1, "a2");
	assert_false(e->present[2]); /* the target keeps its value */
	sluice_net_free(&n);
}

static void
test_delete_insert_is_update(void **state)
{
	(void)state;
	sluice_net n;
	sluice_net_init(&n);
	trow k, r;
	assert_true(add(&n, 0, 'D', NULL, mk(&k, "3", NULL, NULL, false, false)));
	assert_int_equal(sluice_net_kind_of(find(&n, 0, "3")), SLUICE_NET_DELETE);
	assert_val(find(&n, 0, "3"), 0, "3"); /* the key is kept to delete by */
	assert_true(add(&n, 0, 'I', mk(&r, "3", "new", "b", true, true), NULL));
	const sluice_net_entry *e = find(&n, 0, "3");
	assert_int_equal(sluice_net_kind_of(e), SLUICE_NET_UPDATE);
	assert_val(e, 1, "new");
	assert_val(e, 2, "b");
	sluice_net_free(&n);
}

static void
test_insert_delete_is_absent(void **state)
{
	(void)state;
	sluice_net n;
	sluice_net_init(&n);
	trow r, k;
	assert_true(add(&n, 0, 'I', mk(&r, "4", "a", "b", true, true), NULL));
	assert_true(add(&n, 0, 'D', NULL, mk(&k, "4", NULL, NULL, false, false)));
	const sluice_net_entry *e = find(&n, 0, "4");
	assert_int_equal(sluice_net_kind_of(e), SLUICE_NET_ABSENT);
	assert_val(e, 0, "4");
	sluice_net_free(&n);
}

static void
test_update_delete_is_delete(void **state)
{
	(void)state;
	sluice_net n;
	sluice_net_init(&n);
	trow r, k;
	assert_true(add(&n, 0, 'U', mk(&r, "5", "a", "b", true, true), NULL));
	assert_true(add(&n, 0, 'D', NULL, mk(&k, "5", NULL, NULL, false, false)));
	assert_int_equal(sluice_net_kind_of(find(&n, 0, "5")), SLUICE_NET_DELETE);
	sluice_net_free(&n);
}

static void
test_refused_changes_change_nothing(void **state)
{
	(void)state;
	sluice_net n;
	sluice_net_init(&n);
	trow r, r2, k, part;
	assert_true(add(&n, 0, 'I', mk(&r, "1", "a", "b", true, true), NULL));
	/* an insert of a row the chain holds */
	assert_false(add(&n, 0, 'I', mk(&r2, "1", "z", "z", true, true), NULL));
	assert_val(find(&n, 0, "1"), 1, "a");
	assert_true(add(&n, 0, 'D', NULL, mk(&k, "1", NULL, NULL, false, false)));
	/* an update or delete of a row the chain deleted */
	assert_false(add(&n, 0, 'U', mk(&r2, "1", "z", "z", true, true), NULL));
	assert_false(add(&n, 0, 'D', NULL, &k));
	/* an insert with an unknown value */
	assert_false(add(&n, 0, 'I', mk(&part, "9", "a", NULL, true, false), NULL));
	assert_null(find(&n, 0, "9"));
	assert_int_equal(n.n, 1);
	assert_int_equal(sluice_net_kind_of(find(&n, 0, "1")), SLUICE_NET_ABSENT);
	sluice_net_free(&n);
}

static void
test_key_change(void **state)
{
	(void)state;
	sluice_net n;
	sluice_net_init(&n);
	trow oldk, newr, upd, part;
	/* key 1 moves to 2, then the row at 2 is updated */
	assert_true(add(&n, 0, 'U', mk(&newr, "2", "a", "b", true, true),
			mk(&oldk, "1", NULL, NULL, false, false)));
	assert_true(add(&n, 0, 'U', mk(&upd, "2", "a2", NULL, true, false), NULL));
	assert_int_equal(sluice_net_kind_of(find(&n, 0, "1")), SLUICE_NET_DELETE);
	const sluice_net_entry *e = find(&n, 0, "2");
	assert_int_equal(sluice_net_kind_of(e), SLUICE_NET_INSERT);
	assert_val(e, 1, "a2");
	assert_val(e, 2, "b");
	/* a move with an unknown value of the new row cannot be folded */
	assert_false(add(&n, 0, 'U', mk(&part, "3", "a", NULL, true, false),
			 mk(&oldk, "2", NULL, NULL, false, false)));
	assert_int_equal(sluice_net_kind_of(find(&n, 0, "2")), SLUICE_NET_INSERT);
	assert_null(find(&n, 0, "3"));
	sluice_net_free(&n);
}

static void
test_swap_keys(void **state)
{
	(void)state;
	sluice_net n;
	sluice_net_init(&n);
	trow o1, n1, o2, n2, o3, n3;
	/* rows 1 and 2 swap keys through 0: 1->0, 2->1, 0->2 */
	assert_true(add(&n, 0, 'U', mk(&n1, "0", "one", "x", true, true),
			mk(&o1, "1", NULL, NULL, false, false)));
	assert_true(add(&n, 0, 'U', mk(&n2, "1", "two", "y", true, true),
			mk(&o2, "2", NULL, NULL, false, false)));
	assert_true(add(&n, 0, 'U', mk(&n3, "2", "one", "x", true, true),
			mk(&o3, "0", NULL, NULL, false, false)));
	assert_int_equal(sluice_net_kind_of(find(&n, 0, "0")), SLUICE_NET_ABSENT);
	const sluice_net_entry *e1 = find(&n, 0, "1"), *e2 = find(&n, 0, "2");
	assert_int_equal(sluice_net_kind_of(e1), SLUICE_NET_UPDATE);
	assert_val(e1, 1, "two");
	assert_int_equal(sluice_net_kind_of(e2), SLUICE_NET_UPDATE);
	assert_val(e2, 1, "one");
	sluice_net_free(&n);
}

static void
test_thousand_changes_one_entry(void **state)
{
	(void)state;
	sluice_net n;
	sluice_net_init(&n);
	char v[32];
	for (int i = 0; i < 1000; i++) {
		trow r;
		snprintf(v, sizeof(v), "%d", i);
		assert_true(add(&n, 2, 'U', mk(&r, "42", v, "b", true, true), NULL));
	}
	assert_int_equal(n.n, 1);
	assert_val(find(&n, 2, "42"), 1, "999");
	/* the same key in another relation is another row */
	trow r;
	assert_true(add(&n, 1, 'I', mk(&r, "42", "a", "b", true, true), NULL));
	assert_int_equal(n.n, 2);
	assert_true(n.bytes > 0);
	sluice_net_reset(&n);
	assert_int_equal(n.n, 0);
	assert_int_equal(n.bytes, 0);
	assert_null(find(&n, 2, "42"));
	sluice_net_free(&n);
}

static void
test_sorted_order(void **state)
{
	(void)state;
	sluice_net n;
	sluice_net_init(&n);
	trow a, b, c, d, k, e, f;
	assert_true(add(&n, 1, 'I', mk(&a, "10", "a", "b", true, true), NULL)); /* rel 1 insert */
	assert_true(
		add(&n, 0, 'U', mk(&b, "11", "a", NULL, true, false), NULL));   /* update {id,a} */
	assert_true(add(&n, 0, 'I', mk(&c, "12", "a", "b", true, true), NULL)); /* insert */
	assert_true(add(&n, 0, 'U', mk(&d, "13", "a", "b", true, true), NULL)); /* update all */
	assert_true(add(&n, 0, 'D', NULL, mk(&k, "14", NULL, NULL, false, false))); /* delete */
	assert_true(
		add(&n, 0, 'U', mk(&e, "15", "a", NULL, true, false), NULL)); /* update {id,a} */
	assert_true(add(&n, 0, 'I', mk(&f, "16", "a", "b", true, true), NULL));
	assert_true(add(&n, 0, 'D', NULL, mk(&k, "16", NULL, NULL, false, false))); /* absent */
	sluice_net_entry **s = sluice_net_sorted(&n);
	const char *want[] = {"[\"14\"]", "[\"16\"]", "[\"11\"]", "[\"15\"]",
			      "[\"13\"]", "[\"12\"]", "[\"10\"]"};
	assert_int_equal(n.n, 7);
	for (size_t i = 0; i < n.n; i++)
		assert_string_equal(s[i]->key, want[i]);
	sluice_net_free(&n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_insert_then_updates),
		cmocka_unit_test(test_partial_updates_merge),
		cmocka_unit_test(test_delete_insert_is_update),
		cmocka_unit_test(test_insert_delete_is_absent),
		cmocka_unit_test(test_update_delete_is_delete),
		cmocka_unit_test(test_refused_changes_change_nothing),
		cmocka_unit_test(test_key_change),
		cmocka_unit_test(test_swap_keys),
		cmocka_unit_test(test_thousand_changes_one_entry),
		cmocka_unit_test(test_sorted_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
