/* sluice capture: stream a PostgreSQL database's committed transactions into a signed stream. */
#ifndef SLUICE_TOOLS_CMD_CAPTURE_H
#define SLUICE_TOOLS_CMD_CAPTURE_H

int cmd_capture(int argc, char **argv);

#endif
