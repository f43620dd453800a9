/* sluice inspect: list segments and frames of a stream, or print its records. */
#ifndef SLUICE_TOOLS_CMD_INSPECT_H
#define SLUICE_TOOLS_CMD_INSPECT_H

int cmd_inspect(int argc, char **argv);

#endif
