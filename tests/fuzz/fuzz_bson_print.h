/*
 * Input layout of fuzz_bson_print, shared with its corpus generator.
 *
 * Byte 0 selects what the rest is:
 *   FBP_RECORDS      encoded records (varint length + protobuf each, as in a
 *                    frame payload), decoded and printed as JSON and text,
 *                    whole and with values cut at FBP_RECORDS_CUT bytes
 *   anything else    a field: slot (byte 0 % FBP_NSLOTS) names the MongoDB
 *                    BSON field of a record; byte 1 sets the cut of the
 *                    record's values and of a direct print_bson call
 *                    (FBP_NO_CUT: none, else byte * 8 bytes; the record is
 *                    printed whole too); the rest is the field's bytes
 */
#ifndef SLUICE_TESTS_FUZZ_BSON_PRINT_H
#define SLUICE_TESTS_FUZZ_BSON_PRINT_H

enum fbp_slot {
	FBP_SLOT_BEGIN_TOKEN,          /* Begin.source_token */
	FBP_SLOT_COMMIT_TOKEN,         /* Commit.position.resume_token */
	FBP_SLOT_INSERT_DOCUMENT,      /* Insert.document */
	FBP_SLOT_UPDATE,               /* Update.document_key, update_description, document */
	FBP_SLOT_DELETE_KEY,           /* Delete.document_key */
	FBP_SLOT_SNAPSHOT_BEGIN_TOKEN, /* SnapshotBegin.position.resume_token */
	FBP_SLOT_SNAPSHOT_ROW,         /* SnapshotRow.document */
	FBP_SLOT_HEARTBEAT_TOKEN,      /* Heartbeat.position.resume_token */
	FBP_SLOT_NAMESPACE_EVENT,      /* NamespaceChange.event */
	FBP_NSLOTS
};

#define FBP_RECORDS 0xFF
#define FBP_NO_CUT  0xFF

/* Cut of the values of decoded records (FBP_RECORDS), as inspect's 1 MiB on small inputs. */
#define FBP_RECORDS_CUT 16

#endif
