/* Ed25519 signing keys and the set of public keys a reader trusts. */
#ifndef SLUICE_STORE_KEYS_H
#define SLUICE_STORE_KEYS_H

#include <stdbool.h>
#include <stdint.h>

#include "frame.h"

#define SLUICE_KEY_ID_HEX_SIZE (2 * SLUICE_FRAME_KEY_ID_SIZE + 1)

typedef struct sluice_key sluice_key;
typedef struct sluice_trust sluice_trust;

/*
 * sluice_keys_generate writes PREFIX.key (secret, mode 0600, never
 * overwritten unless force) and PREFIX.pub, and puts the key id in hex into
 * id_hex. Logs the cause on failure.
 */
bool sluice_keys_generate(const char *prefix, bool force, char id_hex[SLUICE_KEY_ID_HEX_SIZE]);

/* sluice_keys_id computes the key id of a public key. */
void sluice_keys_id(const uint8_t pk[32], uint8_t id[SLUICE_FRAME_KEY_ID_SIZE]);
/* sluice_keys_id_hex formats a key id as 16 lowercase hex digits. */
void sluice_keys_id_hex(const uint8_t id[SLUICE_FRAME_KEY_ID_SIZE],
			char out[SLUICE_KEY_ID_HEX_SIZE]);

/* sluice_keys_load_public reads the public key of a .pub file, checking its key id. */
bool sluice_keys_load_public(const char *path, uint8_t pk[32]);

/* sluice_key_load reads a secret key file; refuses files readable by others. */
bool sluice_key_load(const char *path, sluice_key **out);
/* sluice_key_free wipes and releases the key; NULL is a no-op. */
void sluice_key_free(sluice_key *key);
const uint8_t *sluice_key_secret(const sluice_key *key); /* 64 bytes, borrowed */
const uint8_t *sluice_key_public(const sluice_key *key); /* 32 bytes, borrowed */
const uint8_t *sluice_key_id(const sluice_key *key);     /* 8 bytes, borrowed */

sluice_trust *sluice_trust_create(void);
/* sluice_trust_free releases the set; NULL is a no-op. */
void sluice_trust_free(sluice_trust *trust);
/* sluice_trust_add_file adds the public key in a .pub file. */
bool sluice_trust_add_file(sluice_trust *trust, const char *path);
void sluice_trust_add(sluice_trust *trust, const uint8_t pk[32]);
/* sluice_trust_add_all adds every key of from (borrowed; NULL adds nothing). */
void sluice_trust_add_all(sluice_trust *trust, const sluice_trust *from);
/* sluice_trust_find returns the trusted public key with this id, or NULL. */
const uint8_t *sluice_trust_find(const sluice_trust *trust,
				 const uint8_t id[SLUICE_FRAME_KEY_ID_SIZE]);
size_t sluice_trust_count(const sluice_trust *trust);

#endif
