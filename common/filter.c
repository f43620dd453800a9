/* Include and exclude globs over relation names. */
#include "filter.h"

#include <fnmatch.h>
#include <stdio.h>

bool
sluice_filter_match(const sluice_table_filter *f, const char *space, const char *name)
{
	char full[512];
	snprintf(full, sizeof(full), "%s.%s", space, name);
	bool included = f->ninclude == 0;
	for (size_t i = 0; i < f->ninclude && !included; i++)
		included = fnmatch(f->include[i], full, 0) == 0;
	if (!included)
		return false;
	for (size_t i = 0; i < f->nexclude; i++)
		if (fnmatch(f->exclude[i], full, 0) == 0)
			return false;
	return true;
}
