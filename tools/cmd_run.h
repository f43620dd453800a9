/* sluice run: many pipelines from one configuration file, supervised, with metrics and health. */
#ifndef SLUICE_TOOLS_CMD_RUN_H
#define SLUICE_TOOLS_CMD_RUN_H

int cmd_run(int argc, char **argv);

#endif
