/* sluice apply and sluice prepare: replay a stream into PostgreSQL; set up a node. */
#ifndef SLUICE_TOOLS_CMD_APPLY_H
#define SLUICE_TOOLS_CMD_APPLY_H

int cmd_apply(int argc, char **argv);
int cmd_prepare(int argc, char **argv);

#endif
