/* src/kafka_sink.c: scaffolding, replaced by the real module */
#include "postgres.h"
