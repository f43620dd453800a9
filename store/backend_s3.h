/* S3 store backend: s3://BUCKET/PREFIX, one object per sealed segment (libcurl, SigV4). */
#ifndef SLUICE_STORE_BACKEND_S3_H
#define SLUICE_STORE_BACKEND_S3_H

#include "backend_ops.h"

extern const sluice_store_ops sluice_backend_s3_ops;

#endif
