/* decoder/outbox_decoder.c: scaffolding, replaced by the real module */
#include "postgres.h"
