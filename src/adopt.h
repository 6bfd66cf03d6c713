/*-------------------------------------------------------------------------
 *
 * adopt.h
 *	  Adopted outbox tables: Debezium Outbox Event Router options and the
 *	  record an adopted row becomes.
 *
 * outbox.adopt(rel, options) stores a table and its options in
 * outbox.adopted; the output plugin then turns every committed INSERT into
 * that table into an event, shaped as Debezium's Outbox Event Router
 * (io.debezium.transforms.outbox.EventRouter) shapes its record.  The rules
 * live here once, used by adopt() (which reports problems as errors) and by
 * the decoder (which must never throw for data: it warns and skips).
 *
 * Nothing here reads catalogs: parsing works on the options jsonb, binding
 * on a tuple descriptor, and row conversion calls only built-in output
 * functions of the few column types accepted.
 *
 * src/adopt.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_ADOPT_H
#define OUTBOX_ADOPT_H

#include "postgres.h"
#include "access/htup.h"
#include "access/tupdesc.h"
#include "regex/regex.h"
#include "utils/jsonb.h"

#include "event.h"

/* Name of the table of adoptions in schema outbox. */
#define OUTBOX_ADOPTED_TABLE_NAME	"adopted"

/* Where table.fields.additional.placement puts a column. */
typedef enum AdoptPlacement
{
	ADOPT_PLACE_HEADER,			/* a record header */
	ADOPT_PLACE_ENVELOPE		/* a field of the value's envelope */
} AdoptPlacement;

/* table.op.invalid.behavior */
typedef enum AdoptOpBehavior
{
	ADOPT_OP_WARN,				/* warn */
	ADOPT_OP_ERROR,				/* error */
	ADOPT_OP_FATAL				/* fatal */
} AdoptOpBehavior;

/* One entry of table.fields.additional.placement. */
typedef struct AdoptField
{
	char	   *column;			/* column name */
	char	   *alias;			/* header or envelope field name */
	AdoptPlacement placement;	/* where it goes */
} AdoptField;

/* One piece of route.topic.replacement: literal text or a group. */
typedef struct AdoptPiece
{
	int			group;			/* capture group number, or -1: literal */
	char	   *text;			/* the literal text (group == -1) */
	int			len;			/* its length */
} AdoptPiece;

/* Parsed options of one adoption. */
typedef struct AdoptConfig
{
	char	   *route_by;		/* route.by.field */
	char	   *topic_regex;	/* route.topic.regex, as given (Java syntax) */
	char	   *topic_replacement;	/* route.topic.replacement, as given */
	char	   *id_column;		/* table.field.event.id */
	char	   *key_column;		/* table.field.event.key, NULL: no key */
	char	   *payload_column; /* table.field.event.payload */
	char	   *timestamp_column;	/* table.field.event.timestamp, or NULL */
	char	   *schema_version_column;	/* table.field.event.schema.version */
	char	   *placement;		/* table.fields.additional.placement text */
	bool		tombstone_on_empty; /* route.tombstone.on.empty.payload */
	bool		expand_json;	/* table.expand.json.payload (no effect) */
	AdoptOpBehavior op_behavior;	/* table.op.invalid.behavior */
	char	   *tracing_field;	/* tracing.span.context.field (no effect) */
	char	   *tracing_operation;	/* tracing.operation.name (no effect) */
	bool		tracing_context_only;	/* tracing.with.context.field.only */
	int			nfields;		/* entries of fields */
	AdoptField *fields;			/* table.fields.additional.placement */
	bool		has_envelope;	/* does any field go into the envelope? */
	bool		re_compiled;	/* must re be freed with pg_regfree()? */
	regex_t		re;				/* ^(?:route.topic.regex)$ in ARE syntax */
	int			ngroups;		/* capture groups of the regex */
	int			npieces;		/* entries of pieces */
	AdoptPiece *pieces;			/* route.topic.replacement, parsed */
} AdoptConfig;

/* Column numbers of an adoption in one table's descriptor. */
typedef struct AdoptBinding
{
	AttrNumber	att_id;			/* table.field.event.id */
	AttrNumber	att_key;		/* table.field.event.key, or invalid */
	AttrNumber	att_payload;	/* table.field.event.payload */
	AttrNumber	att_route;		/* route.by.field */
	AttrNumber *att_fields;		/* one per AdoptConfig.fields entry */
} AdoptBinding;

/* A problem found by parse or bind, for an ereport() or a WARNING. */
typedef struct AdoptError
{
	int			sqlerrcode;		/* SQLSTATE for adopt() */
	char	   *message;		/* errmsg text, translated */
	char	   *detail;			/* errdetail text, or NULL */
	char	   *hint;			/* errhint text, or NULL */
} AdoptError;

/*
 * Parse options (a jsonb object, or NULL for none) into cfg, with Debezium's
 * defaults for what is not given; compiles the topic regex.  Allocates in
 * CurrentMemoryContext (and, for the regex, wherever the regex library
 * does): call outbox_adopt_free() when done.  Never throws for bad input.
 */
extern bool outbox_adopt_parse(Jsonb *options, AdoptConfig *cfg,
							   AdoptError *err);
extern void outbox_adopt_free(AdoptConfig *cfg);

/* Every option with its effective value, as stored in outbox.adopted. */
extern Jsonb *outbox_adopt_options_jsonb(const AdoptConfig *cfg);

/*
 * Find the configured columns in desc and check their types; never throws.
 */
extern bool outbox_adopt_bind(const AdoptConfig *cfg, TupleDesc desc,
							  AdoptBinding *bind, AdoptError *err);

/*
 * Make the event of an inserted row.  Allocates in CurrentMemoryContext;
 * never throws for bad data (returns false, *problem says why).
 */
extern bool outbox_adopt_row_to_event(const AdoptConfig *cfg,
									  const AdoptBinding *bind,
									  TupleDesc desc, HeapTuple tuple,
									  OutboxEvent *ev, const char **problem);

/* The name of a table.op.invalid.behavior value. */
extern const char *outbox_adopt_op_behavior_name(AdoptOpBehavior b);

/* A live column of desc by name, and its type; InvalidAttrNumber if none. */
extern AttrNumber outbox_find_column(TupleDesc desc, const char *name, Oid *type);

#endif							/* OUTBOX_ADOPT_H */
