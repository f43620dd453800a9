/* sluice rotate-key: hand a stream over from its signing key to a successor. */
#ifndef SLUICE_TOOLS_CMD_ROTATE_H
#define SLUICE_TOOLS_CMD_ROTATE_H

int cmd_rotate_key(int argc, char **argv);

#endif
