/*-------------------------------------------------------------------------
 *
 * adopt.c
 *	  Rules of adopted outbox tables, shared by outbox.adopt() and the
 *	  output plugin: Debezium Outbox Event Router options, and the event an
 *	  inserted row becomes.
 *
 * Record shape (see docs/adopt.md for every difference from Debezium):
 *
 *	  topic    route.topic.regex applied to the route.by.field value; when it
 *	           matches the whole value, route.topic.replacement with the
 *	           groups substituted, otherwise the value itself (Kafka
 *	           Connect's RegexRouter)
 *	  key      the table.field.event.key column as text (null stays null)
 *	  value    the table.field.event.payload column as compact JSON: jsonb
 *	           as always, json and text holding JSON without white space
 *	           (member order kept), other text as a JSON string; with envelope placements an object
 *	           {"payload": ..., alias: value, ...}; null (and, with
 *	           route.tombstone.on.empty.payload, blank text) a tombstone
 *	  headers  "id" (table.field.event.id as text) and the header
 *	           placements; a null column adds no header
 *
 * Java's regex syntax is translated for PostgreSQL's regex engine (ARE):
 * named groups (?<name>...) become plain groups, and ${name} in the
 * replacement refers to them by number.  The regex is compiled with the C
 * collation, so that nothing here looks up a catalog.
 *
 * Nothing here may throw for bad data: the decoder calls it for every row,
 * and an ERROR there would stop decoding at the same WAL record for good.
 *
 * src/adopt.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "adopt.h"
#include "compat.h"
#include "event.h"

/* Deepest nesting of a text payload checked as JSON. */
#define ADOPT_MAX_JSON_DEPTH	1000

/* Default option values, Debezium's. */
#define ADOPT_DEFAULT_ROUTE_BY		"aggregatetype"
#define ADOPT_DEFAULT_REGEX			"(?<routedByValue>.*)"
#define ADOPT_DEFAULT_REPLACEMENT	"outbox.event.${routedByValue}"
#define ADOPT_DEFAULT_ID			"id"
#define ADOPT_DEFAULT_KEY			"aggregateid"
#define ADOPT_DEFAULT_PAYLOAD		"payload"
#define ADOPT_DEFAULT_TRACING_FIELD "tracingspancontext"
#define ADOPT_DEFAULT_TRACING_OP	"debezium-read"

/* Kinds of option values. */
typedef enum AdoptOptKind
{
	OPT_STRING,
	OPT_BOOL
} AdoptOptKind;

/* The option names accepted, Debezium's. */
typedef struct AdoptOption
{
	const char *name;			/* option name */
	AdoptOptKind kind;			/* value kind */
} AdoptOption;

static const AdoptOption adopt_options[] = {
	{"route.by.field", OPT_STRING},
	{"route.topic.regex", OPT_STRING},
	{"route.topic.replacement", OPT_STRING},
	{"route.tombstone.on.empty.payload", OPT_BOOL},
	{"table.field.event.id", OPT_STRING},
	{"table.field.event.key", OPT_STRING},
	{"table.field.event.payload", OPT_STRING},
	{"table.field.event.timestamp", OPT_STRING},
	{"table.field.event.schema.version", OPT_STRING},
	{"table.fields.additional.placement", OPT_STRING},
	{"table.op.invalid.behavior", OPT_STRING},
	{"table.expand.json.payload", OPT_BOOL},
	{"tracing.span.context.field", OPT_STRING},
	{"tracing.operation.name", OPT_STRING},
	{"tracing.with.context.field.only", OPT_BOOL},
	{NULL, OPT_STRING}
};

static bool set_error(AdoptError *err, int code, char *message,
					  char *detail, char *hint);
static bool apply_option(AdoptConfig *cfg, const char *name,
						 const char *value, bool bvalue, AdoptError *err);
static bool parse_placement(AdoptConfig *cfg, const char *text,
							AdoptError *err);
static bool compile_regex(AdoptConfig *cfg, char ***names, AdoptError *err);
static bool parse_replacement(AdoptConfig *cfg, char **names,
							  AdoptError *err);
static bool type_is_texty(Oid type);
static bool type_is_scalar(Oid type);
static char *datum_as_text(Oid type, Datum d);
static void append_envelope_value(StringInfo out, Oid type, Datum d);
static bool json_text_valid(const char *s, int len);
static bool route_topic(const AdoptConfig *cfg, const char *value, int len,
						StringInfo topic, const char **problem);

static bool
set_error(AdoptError *err, int code, char *message, char *detail, char *hint)
{
	err->sqlerrcode = code;
	err->message = message;
	err->detail = detail;
	err->hint = hint;
	return false;
}

/* ---------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------
 */

bool
outbox_adopt_parse(Jsonb *options, AdoptConfig *cfg, AdoptError *err)
{
	char	  **names = NULL;

	memset(cfg, 0, sizeof(AdoptConfig));
	cfg->route_by = pstrdup(ADOPT_DEFAULT_ROUTE_BY);
	cfg->topic_regex = pstrdup(ADOPT_DEFAULT_REGEX);
	cfg->topic_replacement = pstrdup(ADOPT_DEFAULT_REPLACEMENT);
	cfg->id_column = pstrdup(ADOPT_DEFAULT_ID);
	cfg->key_column = pstrdup(ADOPT_DEFAULT_KEY);
	cfg->payload_column = pstrdup(ADOPT_DEFAULT_PAYLOAD);
	cfg->placement = pstrdup("");
	cfg->op_behavior = ADOPT_OP_WARN;
	cfg->tracing_field = pstrdup(ADOPT_DEFAULT_TRACING_FIELD);
	cfg->tracing_operation = pstrdup(ADOPT_DEFAULT_TRACING_OP);

	if (options != NULL)
	{
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken tok;
		char	   *name = NULL;

		if (!JB_ROOT_IS_OBJECT(options))
			return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
							 _("adoption options must be a JSON object"),
							 _("outbox.adopt() takes a JSON object of Debezium Outbox Event Router options."),
							 _("Pass for example '{\"route.by.field\": \"aggregatetype\"}', or '{}' for the defaults."));

		it = JsonbIteratorInit(&options->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
				name = pnstrdup(v.val.string.val, v.val.string.len);
			else if (tok == WJB_VALUE)
			{
				const AdoptOption *o;
				char	   *value = NULL;
				bool		bvalue = false;

				for (o = adopt_options; o->name != NULL; o++)
					if (strcmp(o->name, name) == 0)
						break;
				if (o->name == NULL)
					return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
									 psprintf(_("unrecognized adoption option \"%s\""), name),
									 _("outbox.adopt() takes the option names of Debezium's Outbox Event Router, without the \"transforms.<name>.\" prefix."),
									 _("See docs/adopt.md for the options outbox supports."));

				if (v.type == jbvString)
					value = pnstrdup(v.val.string.val, v.val.string.len);
				if (o->kind == OPT_BOOL)
				{
					if (v.type == jbvBool)
						bvalue = v.val.boolean;
					else if (value != NULL && pg_strcasecmp(value, "true") == 0)
						bvalue = true;
					else if (value != NULL && pg_strcasecmp(value, "false") == 0)
						bvalue = false;
					else
						return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
										 psprintf(_("invalid value for adoption option \"%s\""), name),
										 _("The option is a boolean."),
										 _("Use true or false."));
				}
				else if (value == NULL)
					return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
									 psprintf(_("invalid value for adoption option \"%s\""), name),
									 _("The option's value must be a JSON string."),
									 _("Write the value as in the connector's configuration, in double quotes."));
				if (!apply_option(cfg, name, value, bvalue, err))
					return false;
			}
		}
	}

	if (!compile_regex(cfg, &names, err))
		return false;
	if (!parse_replacement(cfg, names, err))
		return false;
	return parse_placement(cfg, cfg->placement, err);
}

/* Store one option's value in cfg. */
static bool
apply_option(AdoptConfig *cfg, const char *name, const char *value,
			 bool bvalue, AdoptError *err)
{
	char	  **column = NULL;

	if (strcmp(name, "route.by.field") == 0)
		column = &cfg->route_by;
	else if (strcmp(name, "table.field.event.id") == 0)
		column = &cfg->id_column;
	else if (strcmp(name, "table.field.event.payload") == 0)
		column = &cfg->payload_column;
	else if (strcmp(name, "table.field.event.key") == 0)
	{
		/* an empty name: no key column, every record has a null key */
		cfg->key_column = (value[0] == '\0') ? NULL : pstrdup(value);
		return true;
	}
	else if (strcmp(name, "table.field.event.timestamp") == 0)
	{
		cfg->timestamp_column = (value[0] == '\0') ? NULL : pstrdup(value);
		return true;
	}
	else if (strcmp(name, "table.field.event.schema.version") == 0)
	{
		cfg->schema_version_column = (value[0] == '\0') ? NULL : pstrdup(value);
		return true;
	}
	else if (strcmp(name, "route.topic.regex") == 0)
		cfg->topic_regex = pstrdup(value);
	else if (strcmp(name, "route.topic.replacement") == 0)
		cfg->topic_replacement = pstrdup(value);
	else if (strcmp(name, "table.fields.additional.placement") == 0)
		cfg->placement = pstrdup(value);
	else if (strcmp(name, "route.tombstone.on.empty.payload") == 0)
		cfg->tombstone_on_empty = bvalue;
	else if (strcmp(name, "table.expand.json.payload") == 0)
		cfg->expand_json = bvalue;
	else if (strcmp(name, "tracing.span.context.field") == 0)
		cfg->tracing_field = pstrdup(value);
	else if (strcmp(name, "tracing.operation.name") == 0)
		cfg->tracing_operation = pstrdup(value);
	else if (strcmp(name, "tracing.with.context.field.only") == 0)
		cfg->tracing_context_only = bvalue;
	else if (strcmp(name, "table.op.invalid.behavior") == 0)
	{
		char	   *v = pstrdup(value);
		int			n;

		/* Debezium trims and ignores case */
		while (*v == ' ')
			v++;
		n = strlen(v);
		while (n > 0 && v[n - 1] == ' ')
			v[--n] = '\0';
		if (pg_strcasecmp(v, "warn") == 0)
			cfg->op_behavior = ADOPT_OP_WARN;
		else if (pg_strcasecmp(v, "error") == 0)
			cfg->op_behavior = ADOPT_OP_ERROR;
		else if (pg_strcasecmp(v, "fatal") == 0)
			cfg->op_behavior = ADOPT_OP_FATAL;
		else
			return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
							 psprintf(_("invalid value \"%s\" for adoption option \"%s\""),
									  value, name),
							 _("table.op.invalid.behavior is warn, error or fatal."),
							 _("Use \"warn\" (the default), \"error\" or \"fatal\"."));
	}

	if (column != NULL)
	{
		if (value[0] == '\0')
			return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
							 psprintf(_("invalid value for adoption option \"%s\""), name),
							 _("The option names a column and must not be empty."),
							 _("Name a column of the adopted table, exactly as stored.")); /* keep */
		*column = pstrdup(value);
	}
	return true;
}

/* table.fields.additional.placement: column:placement[:alias],... */
static bool
parse_placement(AdoptConfig *cfg, const char *text, AdoptError *err)
{
	char	   *copy = pstrdup(text);
	char	   *entry;
	char	   *save = NULL;
	int			max = 4;

	cfg->nfields = 0;
	cfg->fields = palloc(max * sizeof(AdoptField));
	for (entry = strtok_r(copy, ",", &save); entry != NULL;
		 entry = strtok_r(NULL, ",", &save))
	{
		char	   *parts[4];
		int			nparts = 0;
		char	   *p = entry;
		AdoptField *f;
		int			i;

		/* split at ':' and trim each part */
		for (;;)
		{
			char	   *colon = strchr(p, ':');

			if (nparts < 4)
				parts[nparts] = p;
			nparts++;
			if (colon == NULL)
				break;
			*colon = '\0';
			p = colon + 1;
		}
		for (i = 0; i < Min(nparts, 4); i++)
		{
			char	   *s = parts[i];
			int			n;

			while (*s == ' ')
				s++;
			n = strlen(s);
			while (n > 0 && s[n - 1] == ' ')
				s[--n] = '\0';
			parts[i] = s;
		}
		if (nparts < 2 || nparts > 3 || parts[0][0] == '\0')
			return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
							 _("invalid value for adoption option \"table.fields.additional.placement\""),
							 psprintf(_("Entry \"%s\" is not column:placement or column:placement:alias."),
									  entry),
							 _("Write a comma-separated list such as \"type:header,version:header:v\"."));

		if (cfg->nfields == max)
		{
			max *= 2;
			cfg->fields = repalloc(cfg->fields, max * sizeof(AdoptField));
		}
		f = &cfg->fields[cfg->nfields];
		f->column = pstrdup(parts[0]);
		f->alias = pstrdup(nparts == 3 ? parts[2] : parts[0]);
		if (pg_strcasecmp(parts[1], "header") == 0)
			f->placement = ADOPT_PLACE_HEADER;
		else if (pg_strcasecmp(parts[1], "envelope") == 0)
		{
			f->placement = ADOPT_PLACE_ENVELOPE;
			cfg->has_envelope = true;
		}
		else if (pg_strcasecmp(parts[1], "partition") == 0)
			return set_error(err, ERRCODE_FEATURE_NOT_SUPPORTED,
							 _("placement \"partition\" is not supported"),
							 psprintf(_("Column \"%s\": the relay partitions records by their key (murmur2, like the Java client), so per-key order holds; it does not place records on a partition named by a column."),
									  f->column),
							 _("Remove the entry from table.fields.additional.placement, or place the column as a header."));
		else
			return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
							 psprintf(_("invalid placement \"%s\" in adoption option \"table.fields.additional.placement\""),
									  parts[1]),
							 psprintf(_("Column \"%s\": a placement is header, envelope or partition."),
									  f->column),
							 _("Write column:header[:alias] or column:envelope[:alias]."));

		if (f->alias[0] == '\0')
			return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
							 _("invalid value for adoption option \"table.fields.additional.placement\""),
							 psprintf(_("Column \"%s\" has an empty alias."), f->column),
							 _("Leave the alias out to use the column name."));
		if (f->placement == ADOPT_PLACE_HEADER &&
			pg_strncasecmp(f->alias, "outbox-", 7) == 0)
			return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
							 _("invalid value for adoption option \"table.fields.additional.placement\""),
							 psprintf(_("Header \"%s\" of column \"%s\": names starting with \"outbox-\" are reserved for the relay."),
									  f->alias, f->column),
							 _("Give the header another alias."));
		if (f->placement == ADOPT_PLACE_ENVELOPE &&
			strcmp(f->alias, "payload") == 0)
			return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
							 _("invalid value for adoption option \"table.fields.additional.placement\""),
							 psprintf(_("Column \"%s\": the envelope field \"payload\" holds the payload."),
									  f->column),
							 _("Give the envelope field another alias."));
		cfg->nfields++;
	}
	return true;
}

/*
 * Translate route.topic.regex from Java's syntax to an ARE anchored at both
 * ends (RegexRouter uses Matcher.matches()), remembering the names of named
 * groups by number in *names (names[0] unused), and compile it.
 */
static bool
compile_regex(AdoptConfig *cfg, char ***names, AdoptError *err)
{
	const char *s = cfg->topic_regex;
	int			len = strlen(s);
	StringInfoData out;
	int			i;
	bool		in_class = false;
	int			ngroups = 0;
	int			maxnames = 8;
	pg_wchar   *wre;
	int			wlen;
	int			rc;

	*names = palloc0(maxnames * sizeof(char *));
	initStringInfo(&out);
	appendStringInfoString(&out, "^(?:");
	for (i = 0; i < len; i++)
	{
		char		c = s[i];

		if (c == '\\')
		{
			appendStringInfoChar(&out, c);
			if (i + 1 < len)
				appendStringInfoChar(&out, s[++i]);
			continue;
		}
		if (in_class)
		{
			if (c == ']')
				in_class = false;
			appendStringInfoChar(&out, c);
			continue;
		}
		if (c == '[')
		{
			in_class = true;
			appendStringInfoChar(&out, c);
			if (i + 1 < len && s[i + 1] == '^')
				appendStringInfoChar(&out, s[++i]);
			if (i + 1 < len && s[i + 1] == ']')
				appendStringInfoChar(&out, s[++i]);
			continue;
		}
		if (c == '(')
		{
			if (i + 1 < len && s[i + 1] == '?')
			{
				if (i + 2 < len && s[i + 2] == '<' &&
					!(i + 3 < len && (s[i + 3] == '=' || s[i + 3] == '!')))
				{
					int			start = i + 3;
					int			j = start;

					while (j < len && ((s[j] >= 'a' && s[j] <= 'z') ||
									   (s[j] >= 'A' && s[j] <= 'Z') ||
									   (j > start && s[j] >= '0' && s[j] <= '9')))
						j++;
					if (j == start || j >= len || s[j] != '>')
						return set_error(err, ERRCODE_INVALID_REGULAR_EXPRESSION,
										 _("invalid value for adoption option \"route.topic.regex\""),
										 psprintf(_("The named group at character %d has no valid name: a letter, then letters and digits, then \">\"."),
												  i + 1),
										 _("Write a named group as (?<name>...)."));
					ngroups++;
					if (ngroups >= maxnames)
					{
						maxnames *= 2;
						*names = repalloc(*names, maxnames * sizeof(char *));
					}
					(*names)[ngroups] = pnstrdup(s + start, j - start);
					appendStringInfoChar(&out, '(');
					i = j;
					continue;
				}
				/* (?: (?= (?! (?<= (?<! and flags: not a capture group */
				appendStringInfoChar(&out, c);
				continue;
			}
			ngroups++;
			if (ngroups >= maxnames)
			{
				maxnames *= 2;
				*names = repalloc(*names, maxnames * sizeof(char *));
			}
			(*names)[ngroups] = NULL;
		}
		appendStringInfoChar(&out, c);
	}
	appendStringInfoString(&out, ")$");

	wre = palloc((out.len + 1) * sizeof(pg_wchar));
	wlen = pg_mb2wchar_with_len(out.data, wre, out.len);
	rc = pg_regcomp(&cfg->re, wre, wlen, REG_ADVANCED, C_COLLATION_OID);
	if (rc != REG_OKAY)
	{
		char		msg[256];

		pg_regerror(rc, &cfg->re, msg, sizeof(msg));
		return set_error(err, ERRCODE_INVALID_REGULAR_EXPRESSION,
						 _("invalid value for adoption option \"route.topic.regex\""),
						 psprintf(_("PostgreSQL's regular expression engine refuses \"%s\": %s."),
								  cfg->topic_regex, msg),
						 _("Write the regex in the syntax both Java and PostgreSQL understand; see docs/adopt.md."));
	}
	cfg->re_compiled = true;
	if ((int) cfg->re.re_nsub != ngroups)
		return set_error(err, ERRCODE_INVALID_REGULAR_EXPRESSION,
						 _("invalid value for adoption option \"route.topic.regex\""),
						 psprintf(_("\"%s\" uses a construct whose capture groups outbox cannot count."),
								  cfg->topic_regex),
						 _("Use plain groups (...), named groups (?<name>...) and non-capturing groups (?:...)."));
	cfg->ngroups = ngroups;
	return true;
}

/* route.topic.replacement with Java's Matcher.replaceFirst() syntax. */
static bool
parse_replacement(AdoptConfig *cfg, char **names, AdoptError *err)
{
	const char *s = cfg->topic_replacement;
	int			len = strlen(s);
	int			i = 0;
	int			max = 4;
	StringInfoData lit;

	cfg->npieces = 0;
	cfg->pieces = palloc(max * sizeof(AdoptPiece));
	initStringInfo(&lit);

	while (i <= len)
	{
		int			group = -1;

		if (i < len && s[i] == '\\')
		{
			if (i + 1 >= len)
				return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
								 _("invalid value for adoption option \"route.topic.replacement\""),
								 _("It ends with a lone backslash."),
								 _("Write \\\\ for a backslash and \\$ for a dollar sign."));
			appendStringInfoChar(&lit, s[i + 1]);
			i += 2;
			continue;
		}
		if (i < len && s[i] != '$')
		{
			appendStringInfoChar(&lit, s[i]);
			i++;
			continue;
		}

		if (i < len)
		{
			/* a group reference */
			i++;
			if (i < len && s[i] == '{')
			{
				int			start = ++i;
				int			g;
				char	   *name;

				while (i < len && s[i] != '}')
					i++;
				if (i >= len)
					return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
									 _("invalid value for adoption option \"route.topic.replacement\""),
									 _("A \"${\" has no closing \"}\"."),
									 _("Write ${name} for a named group of route.topic.regex."));
				name = pnstrdup(s + start, i - start);
				i++;
				for (g = 1; g <= cfg->ngroups; g++)
					if (names[g] != NULL && strcmp(names[g], name) == 0)
						break;
				if (g > cfg->ngroups)
					return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
									 _("invalid value for adoption option \"route.topic.replacement\""),
									 psprintf(_("route.topic.regex has no group named \"%s\"."), name),
									 _("Name the group in route.topic.regex as (?<name>...), or refer to it by number ($1)."));
				group = g;
			}
			else if (i < len && s[i] >= '0' && s[i] <= '9')
			{
				group = s[i++] - '0';
				if (group > cfg->ngroups)
					return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
									 _("invalid value for adoption option \"route.topic.replacement\""),
									 psprintf(_("route.topic.regex has no group %d."), group),
									 _("Refer to a group route.topic.regex has."));
				/* more digits, as long as the group exists (as Java does) */
				while (i < len && s[i] >= '0' && s[i] <= '9' &&
					   group * 10 + (s[i] - '0') <= cfg->ngroups)
					group = group * 10 + (s[i++] - '0');
			}
			else
				return set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
								 _("invalid value for adoption option \"route.topic.replacement\""),
								 _("A \"$\" is followed by neither a group number nor {name}."),
								 _("Write \\$ for a dollar sign."));
		}
		else
			i++;				/* the end */

		if (lit.len > 0)
		{
			if (cfg->npieces + 2 > max)
			{
				max *= 2;
				cfg->pieces = repalloc(cfg->pieces, max * sizeof(AdoptPiece));
			}
			cfg->pieces[cfg->npieces].group = -1;
			cfg->pieces[cfg->npieces].text = pnstrdup(lit.data, lit.len);
			cfg->pieces[cfg->npieces].len = lit.len;
			cfg->npieces++;
			resetStringInfo(&lit);
		}
		if (group >= 0)
		{
			if (cfg->npieces + 2 > max)
			{
				max *= 2;
				cfg->pieces = repalloc(cfg->pieces, max * sizeof(AdoptPiece));
			}
			cfg->pieces[cfg->npieces].group = group;
			cfg->pieces[cfg->npieces].text = NULL;
			cfg->pieces[cfg->npieces].len = 0;
			cfg->npieces++;
		}
	}
	return true;
}

void
outbox_adopt_free(AdoptConfig *cfg)
{
	if (cfg->re_compiled)
		pg_regfree(&cfg->re);
	cfg->re_compiled = false;
}

const char *
outbox_adopt_op_behavior_name(AdoptOpBehavior b)
{
	switch (b)
	{
		case ADOPT_OP_WARN:
			return "warn";
		case ADOPT_OP_ERROR:
			return "error";
		case ADOPT_OP_FATAL:
			return "fatal";
	}
	return "warn";
}

/* Add one key/value pair to a jsonb object being built. */
static void
push_pair(JsonbParseState **st, const char *key, const char *str, int bval)
{
	JsonbValue	k;
	JsonbValue	v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(st, WJB_KEY, &k);
	if (str != NULL)
	{
		v.type = jbvString;
		v.val.string.val = (char *) str;
		v.val.string.len = strlen(str);
	}
	else if (bval >= 0)
	{
		v.type = jbvBool;
		v.val.boolean = (bval != 0);
	}
	else
		v.type = jbvNull;
	pushJsonbValue(st, WJB_VALUE, &v);
}

Jsonb *
outbox_adopt_options_jsonb(const AdoptConfig *cfg)
{
	JsonbParseState *st = NULL;
	JsonbValue *res;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	push_pair(&st, "route.by.field", cfg->route_by, -1);
	push_pair(&st, "route.topic.regex", cfg->topic_regex, -1);
	push_pair(&st, "route.topic.replacement", cfg->topic_replacement, -1);
	push_pair(&st, "route.tombstone.on.empty.payload", NULL, cfg->tombstone_on_empty);
	push_pair(&st, "table.field.event.id", cfg->id_column, -1);
	push_pair(&st, "table.field.event.key", cfg->key_column ? cfg->key_column : "", -1);
	push_pair(&st, "table.field.event.payload", cfg->payload_column, -1);
	push_pair(&st, "table.field.event.timestamp",
			  cfg->timestamp_column ? cfg->timestamp_column : "", -1);
	push_pair(&st, "table.field.event.schema.version",
			  cfg->schema_version_column ? cfg->schema_version_column : "", -1);
	push_pair(&st, "table.fields.additional.placement", cfg->placement, -1);
	push_pair(&st, "table.op.invalid.behavior",
			  outbox_adopt_op_behavior_name(cfg->op_behavior), -1);
	push_pair(&st, "table.expand.json.payload", NULL, cfg->expand_json);
	push_pair(&st, "tracing.span.context.field", cfg->tracing_field, -1);
	push_pair(&st, "tracing.operation.name", cfg->tracing_operation, -1);
	push_pair(&st, "tracing.with.context.field.only", NULL,
			  cfg->tracing_context_only);
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* ---------------------------------------------------------------------
 * Columns
 * ---------------------------------------------------------------------
 */

static bool
type_is_texty(Oid type)
{
	return type == TEXTOID || type == VARCHAROID || type == BPCHAROID;
}

/* Types a key, id or placed column may have. */
static bool
type_is_scalar(Oid type)
{
	return type_is_texty(type) || type == UUIDOID || type == INT2OID ||
		type == INT4OID || type == INT8OID || type == BOOLOID ||
		type == JSONOID || type == JSONBOID;
}

/* Find a live column by name; InvalidAttrNumber if there is none. */
AttrNumber
outbox_find_column(TupleDesc desc, const char *name, Oid *type)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
		{
			*type = att->atttypid;
			return att->attnum;
		}
	}
	return InvalidAttrNumber;
}

static bool
bind_one(TupleDesc desc, const char *option, const char *name,
		 bool (*type_ok) (Oid), const char *types, AttrNumber *attnum,
		 AdoptError *err)
{
	Oid			type = InvalidOid;

	*attnum = outbox_find_column(desc, name, &type);
	if (*attnum == InvalidAttrNumber)
		return set_error(err, ERRCODE_UNDEFINED_COLUMN,
						 psprintf(_("adopted table has no column \"%s\""), name),
						 psprintf(_("Option \"%s\" names column \"%s\", which the table does not have."),
								  option, name),
						 psprintf(_("Set \"%s\" to the column's name exactly as stored, without quotes."),
								  option));
	if (!type_ok(type))
		return set_error(err, ERRCODE_DATATYPE_MISMATCH,
						 psprintf(_("column \"%s\" of the adopted table has an unsupported type"), name),
						 psprintf(_("Option \"%s\" names column \"%s\" of type %s; it must be %s."),
								  option, name, format_type_be(type), types),
						 _("Change the column's type, or point the option at another column."));
	return true;
}

static bool
type_is_payload(Oid type)
{
	return type == JSONBOID || type == JSONOID || type == TEXTOID ||
		type == VARCHAROID;
}

static bool
type_is_route(Oid type)
{
	return type_is_texty(type) || type == UUIDOID;
}

static bool
type_is_timestamp(Oid type)
{
	return type == TIMESTAMPTZOID || type == TIMESTAMPOID;
}

bool
outbox_adopt_bind(const AdoptConfig *cfg, TupleDesc desc,
				  AdoptBinding *bind, AdoptError *err)
{
	const char *scalars = _("text, varchar, char, uuid, smallint, integer, bigint, boolean, json or jsonb");
	AttrNumber	unused;
	int			i;

	memset(bind, 0, sizeof(AdoptBinding));
	if (!bind_one(desc, "table.field.event.id", cfg->id_column,
				  type_is_scalar, scalars, &bind->att_id, err))
		return false;
	if (!bind_one(desc, "route.by.field", cfg->route_by, type_is_route,
				  _("text, varchar, char or uuid"), &bind->att_route, err))
		return false;
	if (!bind_one(desc, "table.field.event.payload", cfg->payload_column,
				  type_is_payload, _("jsonb, json, text or varchar"),
				  &bind->att_payload, err))
		return false;
	bind->att_key = InvalidAttrNumber;
	if (cfg->key_column != NULL &&
		!bind_one(desc, "table.field.event.key", cfg->key_column,
				  type_is_scalar, scalars, &bind->att_key, err))
		return false;
	if (cfg->timestamp_column != NULL &&
		!bind_one(desc, "table.field.event.timestamp", cfg->timestamp_column,
				  type_is_timestamp, _("timestamp or timestamptz"), &unused, err))
		return false;

	bind->att_fields = palloc0(Max(cfg->nfields, 1) * sizeof(AttrNumber));
	for (i = 0; i < cfg->nfields; i++)
		if (!bind_one(desc, "table.fields.additional.placement",
					  cfg->fields[i].column, type_is_scalar, scalars,
					  &bind->att_fields[i], err))
			return false;
	return true;
}

/* ---------------------------------------------------------------------
 * Rows
 * ---------------------------------------------------------------------
 */

/* A column value as text, for keys and headers. */
static char *
datum_as_text(Oid type, Datum d)
{
	switch (type)
	{
		case INT2OID:
			return psprintf("%d", (int) DatumGetInt16(d));
		case INT4OID:
			return psprintf("%d", DatumGetInt32(d));
		case INT8OID:
			return psprintf(INT64_FORMAT, DatumGetInt64(d));
		case BOOLOID:
			return pstrdup(DatumGetBool(d) ? "true" : "false");
		case UUIDOID:
			return DatumGetCString(DirectFunctionCall1(uuid_out, d));
		case JSONBOID:
			{
				StringInfoData s;

				initStringInfo(&s);
				outbox_append_compact_json(&s, DatumGetJsonbP(d));
				return s.data;
			}
		default:
			/* text, varchar, bpchar, json: the stored text */
			return text_to_cstring((text *) pg_detoast_datum_packed((struct varlena *) DatumGetPointer(d)));
	}
}

/* A column value as a JSON value of the envelope. */
static void
append_envelope_value(StringInfo out, Oid type, Datum d)
{
	char	   *s = datum_as_text(type, d);

	if (type == INT2OID || type == INT4OID || type == INT8OID || type == BOOLOID)
		appendStringInfoString(out, s);
	else
		outbox_append_json_string(out, s, strlen(s));
}

/*
 * Is s[0..len) a JSON text?  Never throws: nesting deeper than the parser's
 * stack allows is answered "no" before the parser sees it.
 */
static bool
json_text_valid(const char *s, int len)
{
	JsonLexContext *lex;
	int			depth = 0;
	bool		in_string = false;
	bool		escaped = false;
	int			i;

	for (i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (escaped)
				escaped = false;
			else if (c == '\\')
				escaped = true;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '[' || c == '{')
		{
			if (++depth > ADOPT_MAX_JSON_DEPTH)
				return false;
		}
		else if (c == ']' || c == '}')
			depth--;
	}
	lex = outbox_make_json_lex(s, len);
	return pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS;
}

/*
 * Append JSON text without its insignificant white space, so that every
 * value is compact JSON on one line, as for jsonb payloads.  s must be
 * valid JSON; member order and duplicate keys are kept as written.
 */
static void
append_compacted_json(StringInfo out, const char *s, int len)
{
	bool		in_string = false;
	bool		escaped = false;
	int			start = 0;
	int			i;

	for (i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (escaped)
				escaped = false;
			else if (c == '\\')
				escaped = true;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
		{
			if (i > start)
				appendBinaryStringInfo(out, s + start, i - start);
			start = i + 1;
		}
	}
	if (len > start)
		appendBinaryStringInfo(out, s + start, len - start);
}

/* The topic of a route.by.field value (RegexRouter's rule). */
static bool
route_topic(const AdoptConfig *cfg, const char *value, int len,
			StringInfo topic, const char **problem)
{
	pg_wchar   *w = palloc((len + 1) * sizeof(pg_wchar));
	int			wlen = pg_mb2wchar_with_len(value, w, len);
	regmatch_t *m = palloc((cfg->ngroups + 1) * sizeof(regmatch_t));
	int			rc;
	int			i;

	rc = pg_regexec((regex_t *) &cfg->re, w, wlen, 0, NULL,
					cfg->ngroups + 1, m, 0);
	if (rc == REG_NOMATCH)
	{
		appendBinaryStringInfo(topic, value, len);
		return true;
	}
	if (rc != REG_OKAY)
	{
		char		msg[256];

		pg_regerror(rc, &cfg->re, msg, sizeof(msg));
		*problem = psprintf(_("route.topic.regex could not be applied to \"%s\": %s."),
							pnstrdup(value, len), msg);
		return false;
	}
	for (i = 0; i < cfg->npieces; i++)
	{
		const AdoptPiece *p = &cfg->pieces[i];

		if (p->group < 0)
			appendBinaryStringInfo(topic, p->text, p->len);
		else if (m[p->group].rm_so >= 0)
		{
			int			n = m[p->group].rm_eo - m[p->group].rm_so;
			char	   *buf = palloc(n * pg_database_encoding_max_length() + 1);
			int			blen = pg_wchar2mb_with_len(w + m[p->group].rm_so, buf, n);

			appendBinaryStringInfo(topic, buf, blen);
		}
	}
	return true;
}

/* Is s[0..len) empty or white space only (Java's String.trim())? */
static bool
blank(const char *s, int len)
{
	int			i;

	for (i = 0; i < len; i++)
		if ((unsigned char) s[i] > ' ')
			return false;
	return true;
}

bool
outbox_adopt_row_to_event(const AdoptConfig *cfg, const AdoptBinding *bind,
						  TupleDesc desc, HeapTuple tuple, OutboxEvent *ev,
						  const char **problem)
{
	Datum	   *values = palloc(desc->natts * sizeof(Datum));
	bool	   *isnull = palloc(desc->natts * sizeof(bool));
	AttrNumber	a;
	Oid			type;
	StringInfoData topic;
	StringInfoData payload;
	bool		has_payload = false;
	bool		payload_is_jsonb = false;
	Jsonb	   *payload_jsonb = NULL;
	JsonbParseState *st = NULL;
	JsonbValue *res;
	int			i;

	memset(ev, 0, sizeof(OutboxEvent));
	ev->attempts = 1;
	heap_deform_tuple(tuple, desc, values, isnull);

	/* topic */
	a = bind->att_route;
	if (isnull[a - 1])
	{
		*problem = psprintf(_("Its route.by.field column \"%s\" is null, so it has no topic."),
							cfg->route_by);
		return false;
	}
	else
	{
		char	   *route = datum_as_text(TupleDescAttr(desc, a - 1)->atttypid,
										  values[a - 1]);

		initStringInfo(&topic);
		if (!route_topic(cfg, route, strlen(route), &topic, problem))
			return false;
		ev->topic = topic.data;
		ev->topic_len = topic.len;
	}

	/* key */
	a = bind->att_key;
	if (a != InvalidAttrNumber && !isnull[a - 1])
	{
		char	   *key = datum_as_text(TupleDescAttr(desc, a - 1)->atttypid,
										values[a - 1]);

		ev->key = key;
		ev->key_len = strlen(key);
	}

	/* payload as JSON text in payload, or as jsonb in payload_jsonb */
	a = bind->att_payload;
	type = TupleDescAttr(desc, a - 1)->atttypid;
	initStringInfo(&payload);
	if (!isnull[a - 1])
	{
		if (type == JSONBOID)
		{
			payload_jsonb = DatumGetJsonbP(values[a - 1]);
			payload_is_jsonb = true;
			has_payload = true;
		}
		else
		{
			text	   *t = (text *) pg_detoast_datum_packed((struct varlena *) DatumGetPointer(values[a - 1]));
			const char *s = VARDATA_ANY(t);
			int			len = VARSIZE_ANY_EXHDR(t);

			if (!(cfg->tombstone_on_empty && blank(s, len)))
			{
				/* json was checked by json_in; text may hold anything */
				if (type == JSONOID || json_text_valid(s, len))
					append_compacted_json(&payload, s, len);
				else
					outbox_append_json_string(&payload, s, len);
				has_payload = true;
			}
		}
	}

	/* value */
	if (cfg->has_envelope && (has_payload || !cfg->tombstone_on_empty))
	{
		StringInfoData env;

		initStringInfo(&env);
		appendStringInfoString(&env, "{\"payload\":");
		if (payload_is_jsonb)
			outbox_append_compact_json(&env, payload_jsonb);
		else if (has_payload)
			appendBinaryStringInfo(&env, payload.data, payload.len);
		else
			appendStringInfoString(&env, "null");
		for (i = 0; i < cfg->nfields; i++)
		{
			const AdoptField *f = &cfg->fields[i];

			if (f->placement != ADOPT_PLACE_ENVELOPE)
				continue;
			a = bind->att_fields[i];
			appendStringInfoChar(&env, ',');
			outbox_append_json_string(&env, f->alias, strlen(f->alias));
			appendStringInfoChar(&env, ':');
			if (isnull[a - 1])
				appendStringInfoString(&env, "null");
			else
				append_envelope_value(&env, TupleDescAttr(desc, a - 1)->atttypid,
									  values[a - 1]);
		}
		appendStringInfoChar(&env, '}');
		ev->payload_json = env.data;
		ev->payload_json_len = env.len;
	}
	else if (payload_is_jsonb)
		ev->payload = payload_jsonb;
	else if (has_payload)
	{
		ev->payload_json = payload.data;
		ev->payload_json_len = payload.len;
	}

	/* headers: id, then the header placements; null columns add none */
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	a = bind->att_id;
	if (!isnull[a - 1])
		push_pair(&st, "id",
				  datum_as_text(TupleDescAttr(desc, a - 1)->atttypid, values[a - 1]),
				  -1);
	for (i = 0; i < cfg->nfields; i++)
	{
		const AdoptField *f = &cfg->fields[i];

		a = bind->att_fields[i];
		if (f->placement != ADOPT_PLACE_HEADER || isnull[a - 1])
			continue;
		push_pair(&st, f->alias,
				  datum_as_text(TupleDescAttr(desc, a - 1)->atttypid, values[a - 1]),
				  -1);
	}
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	ev->headers = JsonbValueToJsonb(res);
	return true;
}
