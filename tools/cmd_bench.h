/* sluice bench-codec: throughput of the segment codec on synthetic PostgreSQL-like rows. */
#ifndef SLUICE_TOOLS_CMD_BENCH_H
#define SLUICE_TOOLS_CMD_BENCH_H

int cmd_bench_codec(int argc, char **argv);

#endif
