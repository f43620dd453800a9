/*
 * Shared between the frame fuzz target and its corpus generator: the fixed
 * test key, the stream name and the input layout of each fuzzing mode.
 *
 * Input byte 0 selects the mode (byte % FUZZ_NMODES) and options (byte / FUZZ_NMODES):
 *
 * FUZZ_MODE_SEGMENT  the rest is the raw bytes of one segment file. It is scanned
 *                    with the test key trusted; every authenticated frame goes
 *                    through the chain checks, decompression and the record
 *                    decoder. Option FUZZ_OPT_ANCHORED checks the chain from the
 *                    stream genesis (segment 1), otherwise unanchored.
 * FUZZ_MODE_FRAMES   the rest is up to FUZZ_MAX_FRAMES frames of RAW (decompressed)
 *                    payload, each as: ctl byte, dtx byte, 16-bit LE length, bytes.
 *                    ctl bits 0-3 are the frame flags; bit 4 adds a txseq gap,
 *                    bit 5 breaks prev_hash, bit 6 miscounts the records, bit 7
 *                    skips a frame number. Each
 *                    frame is signed with the key in force (the test key, or
 *                    the successor key after a KeyHandover naming it; frames
 *                    stop at a handover to any other key) (encode -> parse -> verify
 *                    -> decompress must round-trip), the frames are chained into
 *                    one segment and scanned as in FUZZ_MODE_SEGMENT. Option
 *                    FUZZ_OPT_TRUNCATE cuts the segment where the last two input
 *                    bytes say: the complete frames must scan, the rest be torn.
 * FUZZ_MODE_ZSTD     the rest is 3 bytes of raw_len (LE, masked to FUZZ_ZSTD_MAX_RAW)
 *                    and a COMPRESSED payload for sluice_frame_decompress. Option
 *                    FUZZ_OPT_CONTENT_SIZE takes raw_len from the zstd frame header.
 * FUZZ_MODE_SIGNED   the rest is ctl, record count, dtx, 3 bytes of raw_len and a
 *                    COMPRESSED payload: the target signs a header for it (a
 *                    trusted but buggy or compromised signer) so decompression and
 *                    the record decoder run past authentication. raw_len comes
 *                    from the zstd content size unless ctl bit 4 is set; ctl
 *                    bits 0-3 are the flags, bit 5 names another stream, bit 6
 *                    makes frame_seq 1. Option FUZZ_OPT_CUT cuts the payload
 *                    short by 1 + (last byte % (length - 1)) bytes: the scan
 *                    reads only the authenticated header (header-first path)
 *                    and must call it torn if it links, damage if not.
 */
#ifndef SLUICE_TESTS_FUZZ_COMMON_H
#define SLUICE_TESTS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define FUZZ_STREAM "fuzz"

#define FUZZ_NMODES       4
#define FUZZ_MODE_SEGMENT 0
#define FUZZ_MODE_FRAMES  1
#define FUZZ_MODE_ZSTD    2
#define FUZZ_MODE_SIGNED  3

#define FUZZ_OPT_ANCHORED     0x01 /* FUZZ_MODE_SEGMENT */
#define FUZZ_OPT_CONTENT_SIZE 0x01 /* FUZZ_MODE_ZSTD */
#define FUZZ_OPT_RECORDS      0x02 /* FUZZ_MODE_ZSTD: decode records of the output */
#define FUZZ_OPT_TRUNCATE     0x01 /* FUZZ_MODE_FRAMES: cut the segment short */
#define FUZZ_OPT_CUT          0x01 /* FUZZ_MODE_SIGNED: cut the payload short */

#define FUZZ_SELECTOR(mode, opts) ((uint8_t)((mode) + FUZZ_NMODES * (opts)))

#define FUZZ_MAX_FRAMES          16
#define FUZZ_FRAME_CTL_GAP       0x10
#define FUZZ_FRAME_CTL_BAD_PREV  0x20
#define FUZZ_FRAME_CTL_BAD_COUNT 0x40
#define FUZZ_FRAME_CTL_SKIP_SEQ  0x80
#define FUZZ_SIGNED_CTL_RAW_LEN  0x10
#define FUZZ_SIGNED_CTL_STREAM   0x20 /* header names another stream */
#define FUZZ_SIGNED_CTL_SEQ      0x40 /* frame_seq 1 instead of 0 */

#define FUZZ_ZSTD_MAX_RAW   ((uint32_t)1 << 20) /* 1 MiB */
#define FUZZ_SIGNED_MAX_RAW ((uint32_t)1 << 22) /* 4 MiB */

/* The seed of the Ed25519 test key (crypto_sign_ed25519_seed_keypair). */
static const uint8_t fuzz_key_seed[32] = {
	's', 'l', 'u', 'i', 'c', 'e', ' ', 'f', 'u', 'z', 'z', ' ', 't', 'e', 's', 't',
	' ', 'k', 'e', 'y', ' ', 's', 'e', 'e', 'd', ' ', 'v', '1', ' ', '.', '.', '.',
};

/*
 * The seed of the successor test key: a KeyHandover naming its public key
 * lets FUZZ_MODE_FRAMES sign the frames after it with it (a handover to any
 * other key ends the frames it can sign).
 */
static const uint8_t fuzz_key2_seed[32] = {
	's', 'l', 'u', 'i', 'c', 'e', ' ', 'f', 'u', 'z', 'z', ' ', 's', 'u', 'c', 'c',
	'e', 's', 's', 'o', 'r', ' ', 'k', 'e', 'y', ' ', 'v', '1', ' ', '.', '.', '.',
};

/* The libFuzzer entry point (fuzz_frame.c), also called by fuzz_driver.c. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
