/* Local-directory store backend: STORE/STREAM/<first txseq>.seg files. */
#ifndef SLUICE_STORE_BACKEND_FILE_H
#define SLUICE_STORE_BACKEND_FILE_H

#include "backend_ops.h"

extern const sluice_store_ops sluice_backend_file_ops;

#endif
