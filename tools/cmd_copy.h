/* sluice copy: copy the sealed segments of a stream between two stores, verifying every frame. */
#ifndef SLUICE_TOOLS_CMD_COPY_H
#define SLUICE_TOOLS_CMD_COPY_H

int cmd_copy(int argc, char **argv);

#endif
