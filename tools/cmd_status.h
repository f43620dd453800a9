/* sluice status: each pipeline's position, head, lag and health, from sluice run or the stores. */
#ifndef SLUICE_TOOLS_CMD_STATUS_H
#define SLUICE_TOOLS_CMD_STATUS_H

int cmd_status(int argc, char **argv);

#endif
