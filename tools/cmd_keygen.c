/* sluice keygen: create an Ed25519 signing key pair. */
#include "cmd_keygen.h"

#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "keys.h"

static void
keygen_help(FILE *f)
{
	fprintf(f, "Usage: sluice keygen --out PREFIX [--force]\n"
		   "\n"
		   "Create an Ed25519 key pair for signing stream frames:\n"
		   "  PREFIX.key  secret key (mode 0600; give it only to capture)\n"
		   "  PREFIX.pub  public key (give it to apply, verify and inspect: --trust)\n"
		   "Prints the key id, which frames name and readers show.\n"
		   "\n"
		   "Options:\n"
		   "  -o, --out PREFIX   path prefix of the two files\n"
		   "  -f, --force        replace existing files\n"
		   "  -h, --help         show this help\n"
		   "\n"
		   "Exit status: 0 created, 2 usage error, 3 could not write the files.\n");
}

int
cmd_keygen(int argc, char **argv)
{
	static const struct option opts[] = {
		{"out", required_argument, NULL, 'o'},
		{"force", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *prefix = NULL;
	bool force = false;
	int c;
	while ((c = getopt_long(argc, argv, "o:fh", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			prefix = optarg;
			break;
		case 'f':
			force = true;
			break;
		case 'h':
			keygen_help(stdout);
			return SLUICE_EXIT_OK;
		default:
			return cli_usage_error("keygen", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("keygen", "unexpected argument \"%s\"", argv[optind]);
	if (prefix == NULL)
		return cli_usage_error("keygen", "--out PREFIX is required");

	char id[SLUICE_KEY_ID_HEX_SIZE];
	if (!sluice_keys_generate(prefix, force, id))
		return SLUICE_EXIT_FAILURE;
	printf("%s\n", id);
	fprintf(stderr, "wrote %s.key (secret, mode 0600) and %s.pub; key id %s\n", prefix, prefix,
		id);
	return SLUICE_EXIT_OK;
}
