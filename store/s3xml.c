/* A small bounded reader for the XML of S3 responses (ListObjectsV2, errors, multipart). */
#include "s3xml.h"

#include <stdio.h>
#include <string.h>

/* s3xml_find finds needle (nlen bytes) in hay[from..len); len if absent. */
static size_t
s3xml_find(const char *hay, size_t len, size_t from, const char *needle, size_t nlen)
{
	if (nlen == 0 || len < nlen)
		return len;
	for (size_t i = from; i + nlen <= len; i++)
		if (hay[i] == needle[0] && memcmp(hay + i, needle, nlen) == 0)
			return i;
	return len;
}

/* s3xml_put appends one byte to out, keeping room for the NUL. */
static bool
s3xml_put(char *out, size_t cap, size_t *n, char c)
{
	if (*n + 1 >= cap)
		return false;
	out[(*n)++] = c;
	return true;
}

/* s3xml_put_code appends code point cp as UTF-8. */
static bool
s3xml_put_code(char *out, size_t cap, size_t *n, unsigned long cp)
{
	if (cp < 0x80)
		return s3xml_put(out, cap, n, (char)cp);
	if (cp < 0x800)
		return s3xml_put(out, cap, n, (char)(0xc0 | (cp >> 6))) &&
		       s3xml_put(out, cap, n, (char)(0x80 | (cp & 0x3f)));
	if (cp < 0x10000)
		return s3xml_put(out, cap, n, (char)(0xe0 | (cp >> 12))) &&
		       s3xml_put(out, cap, n, (char)(0x80 | ((cp >> 6) & 0x3f))) &&
		       s3xml_put(out, cap, n, (char)(0x80 | (cp & 0x3f)));
	return s3xml_put(out, cap, n, (char)(0xf0 | (cp >> 18))) &&
	       s3xml_put(out, cap, n, (char)(0x80 | ((cp >> 12) & 0x3f))) &&
	       s3xml_put(out, cap, n, (char)(0x80 | ((cp >> 6) & 0x3f))) &&
	       s3xml_put(out, cap, n, (char)(0x80 | (cp & 0x3f)));
}

/* s3xml_reference decodes the reference at text[i] ('&'); *used gets its length. */
static sluice_s3xml_status
s3xml_reference(const char *text, size_t len, size_t i, char *out, size_t cap, size_t *n,
		size_t *used)
{
	static const struct {
		const char *name;
		char c;
	} named[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
	const char *p = text + i + 1;
	size_t left = len - i - 1;
	for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++) {
		size_t nl = strlen(named[k].name);
		if (left >= nl && memcmp(p, named[k].name, nl) == 0) {
			*used = nl + 1;
			return s3xml_put(out, cap, n, named[k].c) ? SLUICE_S3XML_OK
								  : SLUICE_S3XML_TOO_LONG;
		}
	}
	if (left < 3 || p[0] != '#')
		return SLUICE_S3XML_BAD;
	bool hex = p[1] == 'x';
	size_t j = hex ? 2 : 1;
	unsigned long cp = 0;
	size_t digits = 0;
	for (; j < left && p[j] != ';'; j++) {
		char c = p[j];
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (hex && c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (hex && c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return SLUICE_S3XML_BAD;
		if (++digits > 7)
			return SLUICE_S3XML_BAD;
		cp = cp * (hex ? 16 : 10) + (unsigned long)d;
	}
	if (j >= left || digits == 0 || cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return SLUICE_S3XML_BAD;
	*used = j + 2;
	return s3xml_put_code(out, cap, n, cp) ? SLUICE_S3XML_OK : SLUICE_S3XML_TOO_LONG;
}

sluice_s3xml_status
sluice_s3xml_next(const char *xml, size_t len, size_t *pos, const char *name, char *out, size_t cap,
		  size_t *out_len)
{
	char open[80], empty[80], close[80];
	size_t nlen = strlen(name);
	if (cap == 0 || nlen == 0 || nlen > 64)
		return SLUICE_S3XML_TOO_LONG;
	out[0] = '\0';
	*out_len = 0;
	int ol = snprintf(open, sizeof(open), "<%s>", name);
	int el = snprintf(empty, sizeof(empty), "<%s/>", name);
	int cl = snprintf(close, sizeof(close), "</%s>", name);
	if (*pos > len)
		return SLUICE_S3XML_NONE;
	size_t a = s3xml_find(xml, len, *pos, open, (size_t)ol);
	size_t e = s3xml_find(xml, len, *pos, empty, (size_t)el);
	if (e < a) {
		*pos = e + (size_t)el;
		return SLUICE_S3XML_OK;
	}
	if (a >= len)
		return SLUICE_S3XML_NONE;
	size_t start = a + (size_t)ol;
	size_t end = s3xml_find(xml, len, start, close, (size_t)cl);
	if (end >= len)
		return SLUICE_S3XML_BAD;
	size_t n = 0;
	for (size_t i = start; i < end;) {
		if (xml[i] == '<')
			return SLUICE_S3XML_BAD; /* nested markup: not a text element */
		if (xml[i] == '&') {
			size_t used = 0;
			sluice_s3xml_status st = s3xml_reference(xml, end, i, out, cap, &n, &used);
			if (st != SLUICE_S3XML_OK)
				return st;
			i += used;
			continue;
		}
		if (!s3xml_put(out, cap, &n, xml[i]))
			return SLUICE_S3XML_TOO_LONG;
		i++;
	}
	out[n] = '\0';
	*out_len = n;
	*pos = end + (size_t)cl;
	return SLUICE_S3XML_OK;
}

const char *
sluice_s3xml_strerror(sluice_s3xml_status st)
{
	switch (st) {
	case SLUICE_S3XML_OK:
		return "ok";
	case SLUICE_S3XML_NONE:
		return "no such element";
	case SLUICE_S3XML_BAD:
		return "malformed XML element";
	case SLUICE_S3XML_TOO_LONG:
		return "XML element text too long";
	}
	return "unknown XML status";
}
