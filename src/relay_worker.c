/*-------------------------------------------------------------------------
 *
 * relay_worker.c
 *	  Scaffolding: the relay worker lands with the relay issue.
 *
 * src/relay_worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "outbox.h"

void
outbox_relay_register(void)
{
}

void
outbox_relay_main(Datum main_arg)
{
}
