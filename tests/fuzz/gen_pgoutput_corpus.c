/* Writes seed inputs for fuzz_pgoutput: one well-formed message of each kind. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static uint8_t gen_buf[4096];
static size_t gen_len;

static void
gen_u8(uint8_t v)
{
	gen_buf[gen_len++] = v;
}

static void
gen_u16(uint16_t v)
{
	gen_u8((uint8_t)(v >> 8));
	gen_u8((uint8_t)v);
}

static void
gen_u32(uint32_t v)
{
	gen_u16((uint16_t)(v >> 16));
	gen_u16((uint16_t)v);
}

static void
gen_u64(uint64_t v)
{
	gen_u32((uint32_t)(v >> 32));
	gen_u32((uint32_t)v);
}

static void
gen_str(const char *s)
{
	size_t n = strlen(s) + 1;
	memcpy(gen_buf + gen_len, s, n);
	gen_len += n;
}

static void
gen_tuple(void)
{
	gen_u16(3);
	gen_u8('t');
	gen_u32(2);
	gen_u8('4');
	gen_u8('2');
	gen_u8('n');
	gen_u8('u');
}

static int
gen_write(const char *dir, const char *name, uint8_t mode)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL)
		return 1;
	fputc(mode, f);
	fwrite(gen_buf, 1, gen_len, f);
	fclose(f);
	gen_len = 0;
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_pgoutput_corpus DIR\n");
		return 2;
	}
	const char *d = argv[1];
	int bad = 0;
	gen_u8('B'), gen_u64(0x16B3748), gen_u64(700000000000000), gen_u32(730);
	bad |= gen_write(d, "begin", 1);
	gen_u8('C'), gen_u8(0), gen_u64(0x16B3748), gen_u64(0x16B3780), gen_u64(700000000000000);
	bad |= gen_write(d, "commit", 1);
	gen_u8('O'), gen_u64(0x1000), gen_str("sluice_nodeB");
	bad |= gen_write(d, "origin", 1);
	gen_u8('R'), gen_u32(16384), gen_str("public"), gen_str("t"), gen_u8('d'), gen_u16(3);
	gen_u8(1), gen_str("id"), gen_u32(23), gen_u32(0xFFFFFFFF);
	gen_u8(0), gen_str("v"), gen_u32(25), gen_u32(0xFFFFFFFF);
	gen_u8(0), gen_str("big"), gen_u32(25), gen_u32(0xFFFFFFFF);
	bad |= gen_write(d, "relation", 1);
	gen_u8('Y'), gen_u32(16400), gen_str("public"), gen_str("mood");
	bad |= gen_write(d, "type", 1);
	gen_u8('I'), gen_u32(16384), gen_u8('N'), gen_tuple();
	bad |= gen_write(d, "insert", 1);
	gen_u8('U'), gen_u32(16384), gen_u8('K'), gen_tuple(), gen_u8('N'), gen_tuple();
	bad |= gen_write(d, "update", 1);
	gen_u8('D'), gen_u32(16384), gen_u8('O'), gen_tuple();
	bad |= gen_write(d, "delete", 1);
	gen_u8('T'), gen_u32(2), gen_u8(3), gen_u32(16384), gen_u32(16390);
	bad |= gen_write(d, "truncate", 1);
	gen_u8('M'), gen_u8(1), gen_u64(0x2000), gen_str("prefix"), gen_u32(3), gen_u8('a'),
		gen_u8('b'), gen_u8('c');
	bad |= gen_write(d, "message", 1);
	gen_u8('w'), gen_u64(1), gen_u64(2), gen_u64(3), gen_u8('I'), gen_u32(16384), gen_u8('N'),
		gen_tuple();
	bad |= gen_write(d, "xlogdata", 0);
	gen_u8('k'), gen_u64(0x16B3780), gen_u64(700000000000000), gen_u8(1);
	bad |= gen_write(d, "keepalive", 0);
	const char *line = "1\tone\\ttab\t\\N\t\\x41\\101\\\\\n";
	memcpy(gen_buf, line, strlen(line));
	gen_len = strlen(line);
	bad |= gen_write(d, "copyline", 2);
	return bad;
}
