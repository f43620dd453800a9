/* NATS JetStream store backend: nats://HOSTS/JSSTREAM, one message per frame (libnats). */
#ifndef SLUICE_STORE_BACKEND_NATS_H
#define SLUICE_STORE_BACKEND_NATS_H

#include "backend_ops.h"

extern const sluice_store_ops sluice_backend_nats_ops;

#endif
