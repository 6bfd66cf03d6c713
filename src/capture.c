/* src/capture.c: scaffolding, replaced by the real module */
#include "postgres.h"
