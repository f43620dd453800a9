/* Ed25519 signing keys and the set of public keys a reader trusts. */
#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

#define KEYS_SECRET_TAG "sluice-ed25519-secret-v1"
#define KEYS_PUBLIC_TAG "sluice-ed25519-public-v1"
#define KEYS_FILE_MAX   4096

struct sluice_key {
	uint8_t sk[crypto_sign_ed25519_SECRETKEYBYTES]; /* seed followed by public key */
	uint8_t pk[crypto_sign_ed25519_PUBLICKEYBYTES];
	uint8_t id[SLUICE_FRAME_KEY_ID_SIZE];
};

typedef struct keys_trusted {
	uint8_t pk[32];
	uint8_t id[SLUICE_FRAME_KEY_ID_SIZE];
} keys_trusted;

struct sluice_trust {
	keys_trusted *keys; /* owned array */
	size_t count;
};

void
sluice_keys_id(const uint8_t pk[32], uint8_t id[SLUICE_FRAME_KEY_ID_SIZE])
{
	static const char domain[] = "sluice key id v1";
	uint8_t hash[32];
	crypto_generichash_blake2b_state st;
	crypto_generichash_blake2b_init(&st, NULL, 0, sizeof(hash));
	crypto_generichash_blake2b_update(&st, (const uint8_t *)domain, sizeof(domain));
	crypto_generichash_blake2b_update(&st, pk, 32);
	crypto_generichash_blake2b_final(&st, hash, sizeof(hash));
	memcpy(id, hash, SLUICE_FRAME_KEY_ID_SIZE);
}

void
sluice_keys_id_hex(const uint8_t id[SLUICE_FRAME_KEY_ID_SIZE], char out[SLUICE_KEY_ID_HEX_SIZE])
{
	sodium_bin2hex(out, SLUICE_KEY_ID_HEX_SIZE, id, SLUICE_FRAME_KEY_ID_SIZE);
}

/* keys_write_file writes content to path with mode, refusing to replace it unless force. */
static bool
keys_write_file(const char *path, const char *content, size_t len, mode_t mode, bool force)
{
	int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL);
	int fd = open(path, flags, mode);
	if (fd < 0) {
		if (errno == EEXIST)
			sluice_log_error("could not create key file \"%s\": file exists "
					 "(use --force to replace it)",
					 path);
		else
			sluice_log_error("could not create key file \"%s\": %m", path);
		return false;
	}
	/* O_TRUNC keeps an existing file's mode: set it explicitly. */
	bool ok = fchmod(fd, mode) == 0;
	size_t off = 0;
	while (ok && off < len) {
		ssize_t n = write(fd, content + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			ok = false;
		else
			off += (size_t)n;
	}
	if (ok && fsync(fd) != 0)
		ok = false;
	if (!ok)
		sluice_log_error("could not write key file \"%s\": %m", path);
	if (close(fd) != 0 && ok) {
		sluice_log_error("could not close key file \"%s\": %m", path);
		ok = false;
	}
	return ok;
}

bool
sluice_keys_generate(const char *prefix, bool force, char id_hex[SLUICE_KEY_ID_HEX_SIZE])
{
	bool ok = false;
	uint8_t pk[32];
	uint8_t *seed = sodium_malloc(crypto_sign_ed25519_SEEDBYTES);
	uint8_t *sk = sodium_malloc(crypto_sign_ed25519_SECRETKEYBYTES);
	char *line = sodium_malloc(256);
	char path[4096];
	char pubpath[4096];
	if (seed == NULL || sk == NULL || line == NULL) {
		sluice_log_error("could not allocate secure memory for a key");
		goto cleanup;
	}
	if (snprintf(path, sizeof(path), "%s.key", prefix) >= (int)sizeof(path) ||
	    snprintf(pubpath, sizeof(pubpath), "%s.pub", prefix) >= (int)sizeof(pubpath)) {
		sluice_log_error("key prefix \"%s\" is too long", prefix);
		goto cleanup;
	}
	randombytes_buf(seed, crypto_sign_ed25519_SEEDBYTES);
	crypto_sign_ed25519_seed_keypair(pk, sk, seed);
	uint8_t id[SLUICE_FRAME_KEY_ID_SIZE];
	sluice_keys_id(pk, id);
	sluice_keys_id_hex(id, id_hex);

	char b64[128];
	sodium_bin2base64(b64, sizeof(b64), seed, crypto_sign_ed25519_SEEDBYTES,
			  sodium_base64_VARIANT_ORIGINAL);
	int n = snprintf(line, 256, "%s %s %s\n", KEYS_SECRET_TAG, id_hex, b64);
	sodium_memzero(b64, sizeof(b64));
	if (!keys_write_file(path, line, (size_t)n, 0600, force))
		goto cleanup;

	char pub64[128];
	char publine[256];
	sodium_bin2base64(pub64, sizeof(pub64), pk, sizeof(pk), sodium_base64_VARIANT_ORIGINAL);
	n = snprintf(publine, sizeof(publine), "%s %s %s\n", KEYS_PUBLIC_TAG, id_hex, pub64);
	if (!keys_write_file(pubpath, publine, (size_t)n, 0644, force))
		goto cleanup;
	ok = true;

cleanup:
	sodium_free(line);
	sodium_free(sk);
	sodium_free(seed);
	return ok;
}

/*
 * keys_parse_file splits "TAG ID BASE64" from a key file and decodes the
 * base64 field into out (outlen bytes exactly).
 */
static bool
keys_parse_file(const char *path, const char *tag, uint8_t *out, size_t outlen,
		char id_hex[SLUICE_KEY_ID_HEX_SIZE], bool secret)
{
	bool ok = false;
	int fd = -1;
	char *text = sodium_malloc(KEYS_FILE_MAX + 1);
	if (text == NULL) {
		sluice_log_error("could not allocate secure memory for a key");
		return false;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		sluice_log_error("could not open key file \"%s\": %m", path);
		goto cleanup;
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		sluice_log_error("could not stat key file \"%s\": %m", path);
		goto cleanup;
	}
	if (secret && (st.st_mode & 077) != 0) {
		sluice_log_error("secret key file \"%s\" has mode %04o: it must not be readable "
				 "by group or others (chmod 600 \"%s\")",
				 path, (unsigned)(st.st_mode & 07777), path);
		goto cleanup;
	}
	ssize_t n = read(fd, text, KEYS_FILE_MAX);
	if (n < 0) {
		sluice_log_error("could not read key file \"%s\": %m", path);
		goto cleanup;
	}
	text[n] = '\0';

	size_t taglen = strlen(tag);
	if ((size_t)n < taglen + 1 || memcmp(text, tag, taglen) != 0 || text[taglen] != ' ') {
		sluice_log_error("\"%s\" is not a sluice %s key file (expected it to start with "
				 "\"%s\")",
				 path, secret ? "secret" : "public", tag);
		goto cleanup;
	}
	const char *idp = text + taglen + 1;
	const char *sp = strchr(idp, ' ');
	if (sp == NULL || sp - idp != SLUICE_KEY_ID_HEX_SIZE - 1) {
		sluice_log_error("key file \"%s\" is malformed: bad key id field", path);
		goto cleanup;
	}
	memcpy(id_hex, idp, SLUICE_KEY_ID_HEX_SIZE - 1);
	id_hex[SLUICE_KEY_ID_HEX_SIZE - 1] = '\0';
	const char *b64 = sp + 1;
	size_t b64len = strcspn(b64, "\r\n");
	size_t binlen = 0;
	if (sodium_base642bin(out, outlen, b64, b64len, NULL, &binlen, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    binlen != outlen) {
		sluice_log_error("key file \"%s\" is malformed: bad key field", path);
		goto cleanup;
	}
	ok = true;

cleanup:
	if (fd >= 0)
		close(fd);
	sodium_free(text);
	return ok;
}

bool
sluice_key_load(const char *path, sluice_key **out)
{
	sluice_key *key = sodium_malloc(sizeof(*key));
	uint8_t *seed = sodium_malloc(crypto_sign_ed25519_SEEDBYTES);
	char id_hex[SLUICE_KEY_ID_HEX_SIZE];
	char real_hex[SLUICE_KEY_ID_HEX_SIZE];
	if (key == NULL || seed == NULL) {
		sluice_log_error("could not allocate secure memory for a key");
		goto fail;
	}
	if (!keys_parse_file(path, KEYS_SECRET_TAG, seed, crypto_sign_ed25519_SEEDBYTES, id_hex,
			     true))
		goto fail;
	crypto_sign_ed25519_seed_keypair(key->pk, key->sk, seed);
	sluice_keys_id(key->pk, key->id);
	sluice_keys_id_hex(key->id, real_hex);
	if (strcmp(real_hex, id_hex) != 0) {
		sluice_log_error("key file \"%s\" names key id %s but holds key %s", path, id_hex,
				 real_hex);
		goto fail;
	}
	sodium_free(seed);
	*out = key;
	return true;

fail:
	sodium_free(seed);
	sodium_free(key);
	return false;
}

void
sluice_key_free(sluice_key *key)
{
	/* sodium_free wipes the memory before releasing it. */
	sodium_free(key);
}

const uint8_t *
sluice_key_secret(const sluice_key *key)
{
	return key->sk;
}

const uint8_t *
sluice_key_public(const sluice_key *key)
{
	return key->pk;
}

const uint8_t *
sluice_key_id(const sluice_key *key)
{
	return key->id;
}

sluice_trust *
sluice_trust_create(void)
{
	sluice_trust *t = calloc(1, sizeof(*t));
	if (t == NULL)
		abort();
	return t;
}

void
sluice_trust_free(sluice_trust *trust)
{
	if (trust == NULL)
		return;
	free(trust->keys);
	free(trust);
}

void
sluice_trust_add(sluice_trust *trust, const uint8_t pk[32])
{
	keys_trusted *k = realloc(trust->keys, (trust->count + 1) * sizeof(*k));
	if (k == NULL)
		abort();
	trust->keys = k;
	memcpy(k[trust->count].pk, pk, 32);
	sluice_keys_id(pk, k[trust->count].id);
	trust->count++;
}

bool
sluice_trust_add_file(sluice_trust *trust, const char *path)
{
	uint8_t pk[32];
	if (!sluice_keys_load_public(path, pk))
		return false;
	sluice_trust_add(trust, pk);
	return true;
}

bool
sluice_keys_load_public(const char *path, uint8_t pk[32])
{
	char id_hex[SLUICE_KEY_ID_HEX_SIZE];
	if (!keys_parse_file(path, KEYS_PUBLIC_TAG, pk, 32, id_hex, false))
		return false;
	uint8_t id[SLUICE_FRAME_KEY_ID_SIZE];
	char real_hex[SLUICE_KEY_ID_HEX_SIZE];
	sluice_keys_id(pk, id);
	sluice_keys_id_hex(id, real_hex);
	if (strcmp(real_hex, id_hex) != 0) {
		sluice_log_error("public key file \"%s\" names key id %s but holds key %s", path,
				 id_hex, real_hex);
		return false;
	}
	return true;
}

void
sluice_trust_add_all(sluice_trust *trust, const sluice_trust *from)
{
	if (from == NULL)
		return;
	for (size_t i = 0; i < from->count; i++)
		sluice_trust_add(trust, from->keys[i].pk);
}

const uint8_t *
sluice_trust_find(const sluice_trust *trust, const uint8_t id[SLUICE_FRAME_KEY_ID_SIZE])
{
	for (size_t i = 0; i < trust->count; i++)
		if (memcmp(trust->keys[i].id, id, SLUICE_FRAME_KEY_ID_SIZE) == 0)
			return trust->keys[i].pk;
	return NULL;
}

size_t
sluice_trust_count(const sluice_trust *trust)
{
	return trust->count;
}
