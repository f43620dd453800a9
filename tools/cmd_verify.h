/* sluice verify: check every frame, the chain and txseq density of a stream. */
#ifndef SLUICE_TOOLS_CMD_VERIFY_H
#define SLUICE_TOOLS_CMD_VERIFY_H

int cmd_verify(int argc, char **argv);

#endif
