/* Human-readable and JSON renderings of stream records for `inspect --records`. */
#include "print.h"

#include <bson/bson.h>
#include <inttypes.h>
#include <sodium.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "keys.h"

static void
print_str(sluice_buf *out, const char *s)
{
	sluice_json_append_string(out, s, strlen(s));
}

/*
 * A value cut at max (JSON) is printed where the whole value would be, as
 * {"truncated":true,"bytes":N,"prefix":P}: N the size of the value in bytes,
 * P its beginning written as the whole value would be (print_cut_open, the
 * prefix, print_cut_close). Every truncated value carries its own marker, so
 * a line never holds a key twice.
 */
static void
print_cut_open(sluice_buf *out, size_t len)
{
	sluice_buf_printf(out, "{\"truncated\":true,\"bytes\":%zu,\"prefix\":", len);
}

static void
print_cut_close(sluice_buf *out)
{
	sluice_buf_append_byte(out, '}');
}

/* print_base64 writes bytes as a base64 JSON string; more than max of them cut (prefix: the first
 * max). */
static void
print_base64(sluice_buf *out, const uint8_t *data, size_t len, size_t max)
{
	bool cut = len > max;
	size_t keep = cut ? max : len;
	if (cut)
		print_cut_open(out, len);
	size_t n = sodium_base64_ENCODED_LEN(keep, sodium_base64_VARIANT_ORIGINAL);
	sluice_buf_reserve(out, n + 2);
	sluice_buf_append_byte(out, '"');
	sodium_bin2base64((char *)out->data + out->len, n, data, keep,
			  sodium_base64_VARIANT_ORIGINAL);
	out->len += n - 1;
	sluice_buf_append_byte(out, '"');
	if (cut)
		print_cut_close(out);
}

/* print_relation_of returns the description of relation id, NULL if unknown or no reader. */
static const Sluice__V1__Relation *
print_relation_of(const sluice_reader *reader, uint32_t id)
{
	return reader != NULL ? sluice_reader_relation(reader, id) : NULL;
}

static const char *
print_column_name(const Sluice__V1__Relation *rel, size_t i, char *tmp, size_t size)
{
	if (rel != NULL && i < rel->n_columns)
		return rel->columns[i]->name;
	snprintf(tmp, size, "col%zu", i + 1);
	return tmp;
}

/*
 * print_value writes a text value as a JSON string. A value longer than max
 * bytes is not copied whole into the line: JSON gets the marker of
 * print_cut_open with the first max bytes as prefix, text gets them followed
 * by ...<N bytes>.
 */
static void
print_value(sluice_buf *out, bool json, const uint8_t *data, size_t len, size_t max)
{
	const char *p = data ? (const char *)data : "";
	if (len <= max) {
		sluice_json_append_string(out, p, len);
		return;
	}
	if (json) {
		print_cut_open(out, len);
		sluice_json_append_string(out, p, max);
		print_cut_close(out);
	} else {
		sluice_json_append_string(out, p, max);
		sluice_buf_printf(out, "...<%zu bytes>", len);
	}
}

/*
 * print_bson_text_ok tells whether a BSON string can go through libbson's
 * JSON escaping: at most PRINT_BSON_MAX_STRING bytes, valid UTF-8, with NUL
 * bytes only in a counted string and never as the overlong C0 80, which
 * bson_utf8_validate lets through and the escaping then refuses (it is the
 * only valid use of the byte 0xC0).
 */
static bool
print_bson_text_ok(const char *s, size_t len, bool counted)
{
	return len <= PRINT_BSON_MAX_STRING && bson_utf8_validate(s, len, counted) &&
	       memchr(s, 0xC0, len) == NULL;
}

/*
 * print_bson_check tells whether doc, nested depth levels deep, can be
 * rendered: every element well formed (bson_iter_next checks lengths and
 * terminators, bson_init_static each embedded document), every key and
 * string accepted by print_bson_text_ok, binary values of at most
 * PRINT_BSON_MAX_STRING bytes, documents, arrays and code scopes nested at
 * most PRINT_BSON_MAX_DEPTH deep. libbson 1.23 needs this done
 * first: bson_validate recurses without a limit, and so does the JSON renderer through code
 * scopes; the renderer prints an embedded document that is not one as
 * nothing at all (invalid JSON) and nesting past 200 levels as "{ ... }".
 */
static bool
print_bson_check(const bson_t *doc, int depth)
{
	bson_iter_t it;
	if (depth > PRINT_BSON_MAX_DEPTH || !bson_iter_init(&it, doc))
		return false;
	while (bson_iter_next(&it)) {
		const char *key = bson_iter_key(&it);
		const char *s = NULL;
		uint32_t n = 0;
		bool counted = true;
		const uint8_t *sub_data = NULL;
		uint32_t sub_len = 0;
		if (!print_bson_text_ok(key, strlen(key), false))
			return false;
		switch (bson_iter_type(&it)) {
		case BSON_TYPE_UTF8:
			s = bson_iter_utf8(&it, &n);
			break;
		case BSON_TYPE_CODE:
			s = bson_iter_code(&it, &n);
			break;
		case BSON_TYPE_SYMBOL:
			s = bson_iter_symbol(&it, &n);
			break;
		case BSON_TYPE_REGEX: {
			const char *options = NULL;
			s = bson_iter_regex(&it, &options);
			if (!print_bson_text_ok(options, strlen(options), false))
				return false;
			n = (uint32_t)strlen(s);
			counted = false;
			break;
		}
		case BSON_TYPE_DBPOINTER: {
			const bson_oid_t *oid = NULL;
			bson_iter_dbpointer(&it, &n, &s, &oid);
			counted = false; /* printed up to its first NUL */
			break;
		}
		case BSON_TYPE_CODEWSCOPE:
			s = bson_iter_codewscope(&it, &n, &sub_len, &sub_data);
			break;
		case BSON_TYPE_DOCUMENT:
			bson_iter_document(&it, &sub_len, &sub_data);
			break;
		case BSON_TYPE_ARRAY:
			bson_iter_array(&it, &sub_len, &sub_data);
			break;
		case BSON_TYPE_BINARY: {
			bson_subtype_t subtype;
			uint32_t bin_len = 0;
			const uint8_t *bin = NULL;
			bson_iter_binary(&it, &subtype, &bin_len, &bin);
			if (bin_len > PRINT_BSON_MAX_STRING)
				return false;
			break;
		}
		default:
			break;
		}
		if (s != NULL && !print_bson_text_ok(s, n, counted))
			return false;
		if (sub_data != NULL) {
			bson_t sub;
			if (!bson_init_static(&sub, sub_data, sub_len) ||
			    !print_bson_check(&sub, depth + 1))
				return false;
		}
	}
	/* The loop also ends at a malformed element, whose offset is then in err_off. */
	return it.err_off == 0;
}

/* print_json_compact appends libbson's JSON text without the spaces it puts around tokens. */
static void
print_json_compact(sluice_buf *out, const char *text, size_t len)
{
	bool in_string = false, escaped = false;
	sluice_buf_reserve(out, len);
	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		if (in_string) {
			if (escaped)
				escaped = false;
			else if (c == '\\')
				escaped = true;
			else if (c == '"')
				in_string = false;
		} else if (c == ' ')
			continue;
		else if (c == '"')
			in_string = true;
		out->data[out->len++] = (uint8_t)c;
	}
}

/*
 * print_utf8_cut returns the longest length <= len of text (valid UTF-8 cut
 * anywhere) that ends on a character boundary: the prefix stays UTF-8.
 */
static size_t
print_utf8_cut(const uint8_t *text, size_t len)
{
	size_t start = len; /* where the last character begins */
	while (start > 0 && len - start < 3 && (text[start - 1] & 0xC0) == 0x80)
		start--;
	if (start == 0)
		return 0;
	uint8_t lead = text[--start];
	size_t need = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
	return len - start >= need ? len : start;
}

bool
print_bson(sluice_buf *out, bool json, const uint8_t *data, size_t len, size_t max)
{
	bson_t doc;
	if (data == NULL || len > INT32_MAX || !bson_init_static(&doc, data, len) ||
	    !print_bson_check(&doc, 0) ||
	    !bson_validate(&doc, BSON_VALIDATE_UTF8 | BSON_VALIDATE_UTF8_ALLOW_NULL, NULL))
		return false;
	/*
	 * libbson writes at most as many spaces as other bytes, so its first
	 * 2 * max + 16 bytes hold more than max without them: enough to tell
	 * whether the whole text fits, without rendering all of a huge document.
	 * A text that reaches the limit has been cut by libbson (at the limit,
	 * maybe inside a character); that happens at PRINT_BSON_MAX_TEXT too
	 * (a huge max, as with --full-values), and is then printed cut as well.
	 */
	size_t limit = max < (PRINT_BSON_MAX_TEXT - 16) / 2 ? 2 * max + 16 : PRINT_BSON_MAX_TEXT;
	bson_json_opts_t *opts = bson_json_opts_new(
		json ? BSON_JSON_MODE_CANONICAL : BSON_JSON_MODE_RELAXED, (int32_t)limit);
	size_t n = 0;
	char *text = bson_as_json_with_opts(&doc, &n, opts);
	bson_json_opts_destroy(opts);
	if (text == NULL)
		return false;
	sluice_buf compact = {0};
	print_json_compact(&compact, text, n);
	bson_free(text);
	if (compact.len <= max && n < limit)
		sluice_buf_append(out, compact.data, compact.len);
	else {
		size_t cut = print_utf8_cut(compact.data, compact.len < max ? compact.len : max);
		if (json) {
			print_cut_open(out, len);
			sluice_json_append_string(out, (const char *)compact.data, cut);
			print_cut_close(out);
		} else {
			sluice_buf_append(out, compact.data, cut);
			sluice_buf_printf(out, "...<%zu bytes>", len);
		}
	}
	sluice_buf_free(&compact);
	return true;
}

/* print_row_json renders a row image as {"col": value, ...}. */
static void
print_row_json(sluice_buf *out, const Sluice__V1__Row *row, const Sluice__V1__Relation *rel,
	       size_t max)
{
	char tmp[32];
	sluice_buf_append_byte(out, '{');
	for (size_t i = 0; i < row->n_kinds; i++) {
		if (i > 0)
			sluice_buf_append_byte(out, ',');
		print_str(out, print_column_name(rel, i, tmp, sizeof(tmp)));
		sluice_buf_append_byte(out, ':');
		const ProtobufCBinaryData *v = i < row->n_values ? &row->values[i] : NULL;
		switch (row->kinds[i]) {
		case SLUICE__V1__VALUE_KIND__VALUE_NULL:
			sluice_buf_append_str(out, "null");
			break;
		case SLUICE__V1__VALUE_KIND__VALUE_UNCHANGED_TOAST:
			sluice_buf_append_str(out, "{\"unchanged_toast\":true}");
			break;
		case SLUICE__V1__VALUE_KIND__VALUE_BINARY:
			sluice_buf_append_str(out, "{\"base64\":");
			print_base64(out, v ? v->data : NULL, v ? v->len : 0, max);
			sluice_buf_append_byte(out, '}');
			break;
		default:
			print_value(out, true, v ? v->data : NULL, v ? v->len : 0, max);
		}
	}
	sluice_buf_append_byte(out, '}');
}

/* print_row_text renders a row image as (col=value, ...) with SQL-like quoting. */
static void
print_row_text(sluice_buf *out, const Sluice__V1__Row *row, const Sluice__V1__Relation *rel,
	       size_t max)
{
	char tmp[32];
	sluice_buf_append_byte(out, '(');
	for (size_t i = 0; i < row->n_kinds; i++) {
		if (i > 0)
			sluice_buf_append_str(out, ", ");
		sluice_buf_append_str(out, print_column_name(rel, i, tmp, sizeof(tmp)));
		sluice_buf_append_byte(out, '=');
		const ProtobufCBinaryData *v = i < row->n_values ? &row->values[i] : NULL;
		switch (row->kinds[i]) {
		case SLUICE__V1__VALUE_KIND__VALUE_NULL:
			sluice_buf_append_str(out, "NULL");
			break;
		case SLUICE__V1__VALUE_KIND__VALUE_UNCHANGED_TOAST:
			sluice_buf_append_str(out, "<unchanged toast>");
			break;
		case SLUICE__V1__VALUE_KIND__VALUE_BINARY:
			sluice_buf_printf(out, "<%zu bytes>", v ? v->len : 0);
			break;
		default:
			/* JSON escaping keeps control bytes and invalid UTF-8 visible. */
			print_value(out, false, v ? v->data : NULL, v ? v->len : 0, max);
		}
	}
	sluice_buf_append_byte(out, ')');
}

static void
print_relation_name(sluice_buf *out, bool json, uint32_t id, const sluice_reader *reader)
{
	const Sluice__V1__Relation *rel = print_relation_of(reader, id);
	char name[600];
	if (rel != NULL)
		snprintf(name, sizeof(name), "%s.%s", rel->schema, rel->name);
	else
		snprintf(name, sizeof(name), "<relation %" PRIu32 ">", id);
	if (json) {
		sluice_buf_append_str(out, ",\"relation\":");
		print_str(out, name);
		sluice_buf_printf(out, ",\"relation_id\":%" PRIu32, id);
	} else {
		sluice_buf_append_byte(out, ' ');
		sluice_buf_append_str(out, name);
	}
}

static const char *
print_old_kind(Sluice__V1__OldKind k)
{
	switch (k) {
	case SLUICE__V1__OLD_KIND__OLD_KEY:
		return "key";
	case SLUICE__V1__OLD_KIND__OLD_FULL:
		return "full";
	default:
		return "none";
	}
}

/* print_field_* add one named field in the record's format. */
static void
print_field_u64(sluice_buf *out, bool json, const char *name, uint64_t v)
{
	if (json)
		sluice_buf_printf(out, ",\"%s\":%" PRIu64, name, v);
	else
		sluice_buf_printf(out, " %s=%" PRIu64, name, v);
}

static void
print_field_str(sluice_buf *out, bool json, const char *name, const char *v)
{
	if (json) {
		sluice_buf_printf(out, ",\"%s\":", name);
		print_str(out, v);
	} else
		sluice_buf_printf(out, " %s=%s", name, v);
}

static void
print_field_time(sluice_buf *out, bool json, const char *name, int64_t us)
{
	char t[64];
	cli_format_time(us, t, sizeof(t));
	if (json)
		sluice_buf_printf(out, ",\"%s\":\"%s\",\"%s_us\":%" PRId64, name, t, name, us);
	else
		sluice_buf_printf(out, " %s=%s", name, t);
}

static void
print_field_lsn(sluice_buf *out, bool json, const char *name, uint64_t lsn)
{
	char t[32];
	cli_format_lsn(lsn, t, sizeof(t));
	print_field_str(out, json, name, t);
}

static void
print_field_row(sluice_buf *out, bool json, const char *name, const Sluice__V1__Row *row,
		const Sluice__V1__Relation *rel, size_t max)
{
	if (row == NULL)
		return;
	if (json) {
		sluice_buf_printf(out, ",\"%s\":", name);
		print_row_json(out, row, rel, max);
	} else {
		sluice_buf_printf(out, " %s", name);
		print_row_text(out, row, rel, max);
	}
}

/*
 * print_field_bson adds a MongoDB document (raw BSON, untrusted): with json
 * its canonical extended JSON under name and its bytes in base64 under
 * name_bson_base64, as text its relaxed extended JSON; each cut at max on
 * its own (print_cut_open). Bytes that do not render give name_invalid
 * (json) or <N bytes invalid BSON> (text) instead.
 */
static void
print_field_bson(sluice_buf *out, bool json, const char *name, const ProtobufCBinaryData *d,
		 size_t max)
{
	size_t mark = out->len;
	if (json) {
		sluice_buf_printf(out, ",\"%s\":", name);
		if (!print_bson(out, true, d->data, d->len, max)) {
			out->len = mark;
			sluice_buf_printf(out, ",\"%s_invalid\":true", name);
		}
		sluice_buf_printf(out, ",\"%s_bson_base64\":", name);
		print_base64(out, d->data, d->len, max);
	} else {
		sluice_buf_printf(out, " %s=", name);
		if (!print_bson(out, false, d->data, d->len, max))
			sluice_buf_printf(out, "<%zu bytes invalid BSON>", d->len);
	}
}

/* print_field_position adds a MongoDB source position: cluster time and resume token. */
static void
print_field_position(sluice_buf *out, bool json, const Sluice__V1__SourcePosition *p, size_t max)
{
	if (p == NULL)
		return;
	if (p->has_cluster_time) {
		uint32_t t = (uint32_t)(p->cluster_time >> 32), i = (uint32_t)p->cluster_time;
		if (json)
			sluice_buf_printf(out,
					  ",\"cluster_time\":{\"t\":%" PRIu32 ",\"i\":%" PRIu32 "}",
					  t, i);
		else
			sluice_buf_printf(out, " cluster_time=Timestamp(%" PRIu32 ",%" PRIu32 ")",
					  t, i);
	}
	if (p->has_resume_token)
		print_field_bson(out, json, "resume_token", &p->resume_token, max);
}

/* print_source_name names a relation's source kind; NULL if unknown. */
static const char *
print_source_name(Sluice__V1__SourceKind k)
{
	switch (k) {
	case SLUICE__V1__SOURCE_KIND__SOURCE_POSTGRES:
		return "postgres";
	case SLUICE__V1__SOURCE_KIND__SOURCE_MONGODB:
		return "mongodb";
	default:
		return NULL;
	}
}

void
print_record(sluice_buf *out, bool json, const sluice_record *rec, uint64_t txseq,
	     const sluice_reader *reader, size_t max)
{
	const char *type = sluice_records_type_name(rec);
	if (json) {
		sluice_buf_printf(out, "{\"type\":\"%s\"", type);
		if (txseq != 0)
			sluice_buf_printf(out, ",\"txseq\":%" PRIu64, txseq);
		else
			sluice_buf_append_str(out, ",\"txseq\":null");
	} else {
		if (txseq != 0)
			sluice_buf_printf(out, "%8" PRIu64 " ", txseq);
		else
			sluice_buf_append_str(out, "         ");
		sluice_buf_append_str(out, type);
	}

	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_BEGIN: {
		const Sluice__V1__Begin *b = rec->begin;
		print_field_time(out, json, "commit_time", b->commit_time_us);
		if (b->has_source_lsn)
			print_field_lsn(out, json, "lsn", b->source_lsn);
		if (b->has_source_xid)
			print_field_u64(out, json, "xid", b->source_xid);
		print_field_str(out, json, "origin", b->origin_node);
		if (b->has_source_token)
			print_field_bson(out, json, "resume_token", &b->source_token, max);
		break;
	}
	case SLUICE__V1__RECORD__BODY_COMMIT: {
		const Sluice__V1__Commit *c = rec->commit;
		print_field_time(out, json, "commit_time", c->commit_time_us);
		if (c->has_end_lsn)
			print_field_lsn(out, json, "end_lsn", c->end_lsn);
		if (c->has_change_count)
			print_field_u64(out, json, "changes", c->change_count);
		print_field_position(out, json, c->position, max);
		break;
	}
	case SLUICE__V1__RECORD__BODY_RELATION: {
		const Sluice__V1__Relation *r = rec->relation;
		print_field_u64(out, json, "relation_id", r->id);
		char name[600];
		snprintf(name, sizeof(name), "%s.%s", r->schema, r->name);
		print_field_str(out, json, "relation", name);
		/* Streams from before Relation.source have only PostgreSQL relations. */
		Sluice__V1__SourceKind source =
			r->has_source ? r->source : SLUICE__V1__SOURCE_KIND__SOURCE_POSTGRES;
		const char *source_name = print_source_name(source);
		if (source_name == NULL)
			sluice_buf_printf(out, json ? ",\"source\":%d" : " source=%d", (int)source);
		else if (json || source != SLUICE__V1__SOURCE_KIND__SOURCE_POSTGRES)
			print_field_str(out, json, "source", source_name);
		if (json) {
			sluice_buf_append_str(out, ",\"columns\":[");
			for (size_t i = 0; i < r->n_columns; i++) {
				const Sluice__V1__Column *c = r->columns[i];
				if (i > 0)
					sluice_buf_append_byte(out, ',');
				sluice_buf_append_str(out, "{\"name\":");
				print_str(out, c->name);
				if (c->type_name)
					print_field_str(out, true, "type", c->type_name);
				if (c->has_type_oid)
					print_field_u64(out, true, "type_oid", c->type_oid);
				if (c->has_key && c->key)
					sluice_buf_append_str(out, ",\"key\":true");
				sluice_buf_append_byte(out, '}');
			}
			sluice_buf_append_byte(out, ']');
		} else if (r->n_columns > 0 || source == SLUICE__V1__SOURCE_KIND__SOURCE_POSTGRES) {
			sluice_buf_append_str(out, " (");
			for (size_t i = 0; i < r->n_columns; i++) {
				const Sluice__V1__Column *c = r->columns[i];
				sluice_buf_printf(out, "%s%s %s%s", i ? ", " : "", c->name,
						  c->type_name ? c->type_name : "?",
						  c->has_key && c->key ? " key" : "");
			}
			sluice_buf_append_byte(out, ')');
		}
		break;
	}
	case SLUICE__V1__RECORD__BODY_INSERT: {
		const Sluice__V1__Insert *x = rec->insert;
		const Sluice__V1__Relation *rel = print_relation_of(reader, x->relation_id);
		print_relation_name(out, json, x->relation_id, reader);
		print_field_row(out, json, "new", x->new_row, rel, max);
		if (x->has_document)
			print_field_bson(out, json, "document", &x->document, max);
		break;
	}
	case SLUICE__V1__RECORD__BODY_UPDATE: {
		const Sluice__V1__Update *x = rec->update;
		const Sluice__V1__Relation *rel = print_relation_of(reader, x->relation_id);
		print_relation_name(out, json, x->relation_id, reader);
		if (x->old_row != NULL)
			print_field_str(out, json, "old_kind", print_old_kind(x->old_kind));
		print_field_row(out, json, "old", x->old_row, rel, max);
		print_field_row(out, json, "new", x->new_row, rel, max);
		if (x->has_document_key)
			print_field_bson(out, json, "document_key", &x->document_key, max);
		if (x->has_update_description)
			print_field_bson(out, json, "update_description", &x->update_description,
					 max);
		if (x->has_document)
			print_field_bson(out, json, "document", &x->document, max);
		if (x->has_document_before)
			print_field_bson(out, json, "document_before", &x->document_before, max);
		break;
	}
	case SLUICE__V1__RECORD__BODY_DELETE: {
		const Sluice__V1__Delete *x = rec->delete_;
		const Sluice__V1__Relation *rel = print_relation_of(reader, x->relation_id);
		print_relation_name(out, json, x->relation_id, reader);
		print_field_str(out, json, "old_kind", print_old_kind(x->old_kind));
		print_field_row(out, json, "old", x->old_row, rel, max);
		if (x->has_document_key)
			print_field_bson(out, json, "document_key", &x->document_key, max);
		if (x->has_document_before)
			print_field_bson(out, json, "document_before", &x->document_before, max);
		break;
	}
	case SLUICE__V1__RECORD__BODY_TRUNCATE: {
		const Sluice__V1__Truncate *x = rec->truncate;
		if (json)
			sluice_buf_append_str(out, ",\"relations\":[");
		for (size_t i = 0; i < x->n_relation_ids; i++) {
			const Sluice__V1__Relation *rel =
				print_relation_of(reader, x->relation_ids[i]);
			char name[600];
			if (rel)
				snprintf(name, sizeof(name), "%s.%s", rel->schema, rel->name);
			else
				snprintf(name, sizeof(name), "<relation %" PRIu32 ">",
					 x->relation_ids[i]);
			if (json) {
				if (i > 0)
					sluice_buf_append_byte(out, ',');
				print_str(out, name);
			} else
				sluice_buf_printf(out, " %s", name);
		}
		if (json)
			sluice_buf_append_byte(out, ']');
		if (x->has_cascade && x->cascade)
			print_field_str(out, json, "cascade", "true");
		if (x->has_restart_identity && x->restart_identity)
			print_field_str(out, json, "restart_identity", "true");
		break;
	}
	case SLUICE__V1__RECORD__BODY_MESSAGE: {
		const Sluice__V1__LogicalMessage *m = rec->message;
		if (m->prefix)
			print_field_str(out, json, "prefix", m->prefix);
		if (json) {
			sluice_buf_append_str(out, ",\"content\":");
			print_value(out, true, m->content.data, m->content.len, max);
		} else
			sluice_buf_printf(out, " content=<%zu bytes>", m->content.len);
		break;
	}
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN: {
		const Sluice__V1__SnapshotBegin *s = rec->snapshot_begin;
		print_field_time(out, json, "time", s->time_us);
		if (s->has_consistent_lsn)
			print_field_lsn(out, json, "consistent_lsn", s->consistent_lsn);
		if (s->snapshot_name)
			print_field_str(out, json, "snapshot", s->snapshot_name);
		print_field_str(out, json, "origin", s->origin_node);
		print_field_position(out, json, s->position, max);
		break;
	}
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW: {
		const Sluice__V1__SnapshotRow *x = rec->snapshot_row;
		const Sluice__V1__Relation *rel = print_relation_of(reader, x->relation_id);
		print_relation_name(out, json, x->relation_id, reader);
		print_field_row(out, json, "row", x->row, rel, max);
		if (x->has_document)
			print_field_bson(out, json, "document", &x->document, max);
		break;
	}
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_END: {
		const Sluice__V1__SnapshotEnd *s = rec->snapshot_end;
		if (s->has_row_count)
			print_field_u64(out, json, "rows", s->row_count);
		if (s->has_relation_count)
			print_field_u64(out, json, "relations", s->relation_count);
		break;
	}
	case SLUICE__V1__RECORD__BODY_HEARTBEAT: {
		const Sluice__V1__Heartbeat *h = rec->heartbeat;
		print_field_time(out, json, "time", h->time_us);
		if (h->has_source_lsn)
			print_field_lsn(out, json, "lsn", h->source_lsn);
		print_field_position(out, json, h->position, max);
		break;
	}
	case SLUICE__V1__RECORD__BODY_KEY_HANDOVER: {
		const Sluice__V1__KeyHandover *k = rec->key_handover;
		if (k->next_public_key.len == 32) {
			uint8_t id[SLUICE_FRAME_KEY_ID_SIZE];
			char hex[SLUICE_KEY_ID_HEX_SIZE];
			sluice_keys_id(k->next_public_key.data, id);
			sluice_keys_id_hex(id, hex);
			print_field_str(out, json, "next_key", hex);
		}
		if (k->reason != NULL)
			print_field_str(out, json, "reason", k->reason);
		break;
	}
	case SLUICE__V1__RECORD__BODY_NAMESPACE_CHANGE: {
		const Sluice__V1__NamespaceChange *x = rec->namespace_change;
		if (x->operation)
			print_field_str(out, json, "operation", x->operation);
		if (x->database)
			print_field_str(out, json, "database", x->database);
		if (x->collection)
			print_field_str(out, json, "collection", x->collection);
		if (x->to_database)
			print_field_str(out, json, "to_database", x->to_database);
		if (x->to_collection)
			print_field_str(out, json, "to_collection", x->to_collection);
		if (x->has_event)
			print_field_bson(out, json, "event", &x->event, max);
		break;
	}
	default:
		break;
	}
	if (json)
		sluice_buf_append_byte(out, '}');
	sluice_buf_append_byte(out, '\n');
}
