/* sluice keygen: create an Ed25519 signing key pair. */
#ifndef SLUICE_TOOLS_CMD_KEYGEN_H
#define SLUICE_TOOLS_CMD_KEYGEN_H

int cmd_keygen(int argc, char **argv);

#endif
