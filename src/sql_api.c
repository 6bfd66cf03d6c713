/* src/sql_api.c: scaffolding, replaced by the real module */
#include "postgres.h"
