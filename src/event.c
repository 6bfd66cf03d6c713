/*-------------------------------------------------------------------------
 *
 * event.c
 *	  The rules of an outbox event: validation, compact JSON, and the codec
 *	  of the logical messages written by outbox.emit().
 *
 * Shared by the SQL API (which rejects bad events at write time) and the
 * output plugin (which reads emitted messages back).  Nothing here touches
 * catalogs, so the decoder may call it under a historic snapshot.
 *
 * src/event.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

#include "compat.h"
#include "event.h"
#include "outbox.h"

/* Header names the relay adds itself; events may not set them. */
#define OUTBOX_RESERVED_HEADER_PREFIX "outbox-"

static void append_int32(StringInfo out, int32 v);
static void append_int64(StringInfo out, int64 v);
static void append_jsonb_field(StringInfo out, Jsonb *jb);
static bool read_bytes(const char **p, const char *end, Size n,
					   const char **bytes);
static bool read_int32(const char **p, const char *end, int32 *v);
static bool read_int64(const char **p, const char *end, int64 *v);
static bool read_jsonb_field(const char **p, const char *end, Jsonb **jb);
static bool jsonb_container_valid(const JsonbContainer *jc, uint32 len,
								  int depth);

/* Bytes of a header name quoted in an error. */
#define OUTBOX_HEADER_NAME_SHOWN	64

/* How much of a header name an error quotes: whole characters only. */
static inline int
shown_len(const char *name, int len)
{
	return len <= OUTBOX_HEADER_NAME_SHOWN ? len :
		pg_mbcliplen(name, len, OUTBOX_HEADER_NAME_SHOWN);
}

/* Deepest jsonb nesting accepted in an emitted message's raw bytes. */
#define OUTBOX_MAX_JSONB_DEPTH	1000

/* ---------------------------------------------------------------------
 * Validation
 * ---------------------------------------------------------------------
 */

/*
 * Why a topic name is not a legal Kafka topic name, or NULL if it is one:
 * 1 to 249 characters of [A-Za-z0-9._-], and neither "." nor "..".
 */
const char *
outbox_topic_problem(const char *topic, int len)
{
	int			i;

	if (len <= 0)
		return _("A Kafka topic name must not be empty.");
	if (len > OUTBOX_TOPIC_MAX_LEN)
		return _("A Kafka topic name is at most 249 characters long.");
	if ((len == 1 && topic[0] == '.') ||
		(len == 2 && topic[0] == '.' && topic[1] == '.'))
		return _("Kafka reserves the topic names \".\" and \"..\".");
	for (i = 0; i < len; i++)
	{
		char		c = topic[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return _("A Kafka topic name may contain only ASCII letters, digits, \".\", \"_\" and \"-\".");
	}
	return NULL;
}

void
outbox_check_topic(const char *topic, int len)
{
	const char *problem = outbox_topic_problem(topic, len);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid Kafka topic name \"%s\"",
						pnstrdup(topic, Min(len, OUTBOX_TOPIC_MAX_LEN + 1))),
				 errdetail_internal("%s", problem),
				 errhint("Use 1 to 249 characters of letters, digits, \".\", \"_\" and \"-\".")));
}

/*
 * The setting naming topic if it is one only the relay may write to
 * (outbox.progress_topic, and outbox.reply_topic when set), else NULL.
 * Both settings are PGC_SIGHUP: a session cannot change what it is
 * compared with.
 */
const char *
outbox_topic_reserved(const char *topic)
{
	if (outbox_progress_topic != NULL && outbox_progress_topic[0] != '\0' &&
		strcmp(topic, outbox_progress_topic) == 0)
		return "outbox.progress_topic";
	if (outbox_reply_topic != NULL && outbox_reply_topic[0] != '\0' &&
		strcmp(topic, outbox_reply_topic) == 0)
		return "outbox.reply_topic";
	return NULL;
}

void
outbox_check_topic_not_reserved(const char *topic, int len)
{
	char	   *name = pnstrdup(topic, Min(len, OUTBOX_TOPIC_MAX_LEN + 1));
	const char *setting = outbox_topic_reserved(name);

	if (setting != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("Kafka topic \"%s\" is reserved for the outbox relay", name),
				 errdetail("It is the value of %s: only the relay writes records there.",
						   setting),
				 errhint("Publish events to another topic.")));
	pfree(name);
}

/*
 * Why headers are not an object of string values, or NULL if they are (or
 * are SQL NULL).  Names starting with "outbox-" are reserved for the relay.
 * The reason names the header at fault; it is palloc'd.
 */
const char *
outbox_headers_problem(Jsonb *headers)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	const char *name = "";
	int			name_len = 0;

	if (headers == NULL)
		return NULL;
	if (!JB_ROOT_IS_OBJECT(headers))
		return _("Headers must be a JSON object, not an array or a scalar.");

	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			name = v.val.string.val;
			name_len = v.val.string.len;
			if (name_len == 0)
				return _("A header name must not be empty.");
			if (name_len >= (int) strlen(OUTBOX_RESERVED_HEADER_PREFIX) &&
				pg_strncasecmp(name, OUTBOX_RESERVED_HEADER_PREFIX,
							   strlen(OUTBOX_RESERVED_HEADER_PREFIX)) == 0)
				return psprintf(_("Header \"%.*s\": names starting with \"outbox-\" are reserved for the relay."),
								shown_len(name, name_len), name);
		}
		else if (tok == WJB_VALUE && v.type != jbvString)
			return psprintf(_("Header \"%.*s\": the value is %s; every header value must be a JSON string."),
							shown_len(name, name_len), name,
							v.type == jbvNull ? "null" :
							v.type == jbvNumeric ? "a number" :
							v.type == jbvBool ? "a boolean" :
							"an array or an object");
	}
	return NULL;
}

void
outbox_check_headers(Jsonb *headers)
{
	const char *problem = outbox_headers_problem(headers);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid outbox headers"),
				 errdetail_internal("%s", problem),
				 errhint("Pass headers as a JSON object of strings, for example '{\"trace-id\": \"abc\"}', or NULL.")));
}

/* Length of a JSON string literal as outbox_append_json_string() writes it. */
static Size
json_string_length(const char *s, int len)
{
	Size		n = (Size) len + 2;
	int			i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\' || c == '\b' || c == '\f' ||
			c == '\n' || c == '\r' || c == '\t')
			n += 1;
		else if (c < 0x20)
			n += 5;				/* \u00XX */
	}
	return n;
}

/* Length of a scalar as append_scalar() writes it. */
static Size
scalar_length(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return 4;
		case jbvString:
			return json_string_length(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			{
				/* a numeric's text can be far longer than its binary form */
				char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out,
																	NumericGetDatum(v->val.numeric)));
				Size		n = strlen(s);

				pfree(s);
				return n;
			}
		case jbvBool:
			return v->val.boolean ? 4 : 5;
		default:
			elog(ERROR, "unexpected jsonb scalar type %d", (int) v->type);
	}
	return 0;					/* keep compiler quiet */
}

/*
 * The length of outbox_append_compact_json()'s output for jb, computed
 * without building the text: the same walk, counting instead of writing.
 */
Size
outbox_compact_json_length(Jsonb *jb)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		need_comma = false;
	bool		raw_scalar = JB_ROOT_IS_SCALAR(jb);
	Size		n = 0;

	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_ARRAY:
				n += need_comma + (raw_scalar ? 0 : 1);
				need_comma = false;
				break;
			case WJB_BEGIN_OBJECT:
				n += need_comma + 1;
				need_comma = false;
				break;
			case WJB_END_ARRAY:
				n += raw_scalar ? 0 : 1;
				need_comma = true;
				break;
			case WJB_END_OBJECT:
				n += 1;
				need_comma = true;
				break;
			case WJB_KEY:
				n += need_comma +
					json_string_length(v.val.string.val, v.val.string.len) + 1;
				need_comma = false;
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				n += need_comma + scalar_length(&v);
				need_comma = true;
				break;
			default:
				elog(ERROR, "unexpected jsonb iterator token %d", (int) tok);
		}
	}
	return n;
}

/*
 * The size an event counts against outbox.max_message_size: an upper
 * estimate of the Kafka record batch that carries it alone, as the producer
 * (message.max.bytes) and the broker (max.message.bytes) count it.  That is
 * the value as the relay sends it (compact JSON text), the key, each header's
 * name and value bytes, the relay's own outbox-* headers at their largest,
 * and the record and batch framing (see OUTBOX_KAFKA_* in event.h).  The
 * topic is not part of the record.  Headers must have been validated (an
 * object of strings).
 */
Size
outbox_event_size(const OutboxEvent *ev)
{
	Size		size = OUTBOX_KAFKA_FIXED_OVERHEAD;

	if (ev->key != NULL)
		size += ev->key_len;
	if (ev->payload != NULL)
		size += outbox_compact_json_length(ev->payload);
	if (ev->headers != NULL && !JB_ROOT_IS_SCALAR(ev->headers))
	{
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken tok;

		it = JsonbIteratorInit(&ev->headers->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
				size += OUTBOX_KAFKA_HEADER_OVERHEAD + v.val.string.len;
			else if (tok == WJB_VALUE && v.type == jbvString)
				size += v.val.string.len;
		}
	}
	return size;
}

/* Check everything about an event; ereport ERROR on the first problem. */
void
outbox_check_event(const OutboxEvent *ev)
{
	Size		size;

	outbox_check_topic(ev->topic, ev->topic_len);
	outbox_check_headers(ev->headers);

	size = outbox_event_size(ev);
	if (size > (Size) outbox_max_message_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("outbox message is too large"),
				 errdetail("The Kafka record for topic \"%s\" would take up to %zu bytes (value as compact JSON, key, headers and record overhead); outbox.max_message_size is %d bytes.",
						   pnstrdup(ev->topic, ev->topic_len), size,
						   outbox_max_message_size),
				 errhint("Split the event, or raise outbox.max_message_size together with the Kafka broker's message.max.bytes.")));
}

/* ---------------------------------------------------------------------
 * Compact JSON
 * ---------------------------------------------------------------------
 */

void
outbox_append_json_string(StringInfo out, const char *s, int len)
{
	int			i;
	int			start = 0;

	enlargeStringInfo(out, len + 2);
	appendStringInfoCharMacro(out, '"');
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];
		const char *esc = NULL;

		switch (c)
		{
			case '"':
				esc = "\\\"";
				break;
			case '\\':
				esc = "\\\\";
				break;
			case '\b':
				esc = "\\b";
				break;
			case '\f':
				esc = "\\f";
				break;
			case '\n':
				esc = "\\n";
				break;
			case '\r':
				esc = "\\r";
				break;
			case '\t':
				esc = "\\t";
				break;
			default:
				if (c >= 0x20)
					continue;
		}
		if (i > start)
			appendBinaryStringInfo(out, s + start, i - start);
		if (esc != NULL)
			appendStringInfoString(out, esc);
		else
			appendStringInfo(out, "\\u%04x", c);
		start = i + 1;
	}
	if (len > start)
		appendBinaryStringInfo(out, s + start, len - start);
	appendStringInfoCharMacro(out, '"');
}

static void
append_scalar(StringInfo out, JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			appendBinaryStringInfo(out, "null", 4);
			break;
		case jbvString:
			outbox_append_json_string(out, v->val.string.val, v->val.string.len);
			break;
		case jbvNumeric:
			appendStringInfoString(out,
								   DatumGetCString(DirectFunctionCall1(numeric_out,
																	   NumericGetDatum(v->val.numeric))));
			break;
		case jbvBool:
			if (v->val.boolean)
				appendBinaryStringInfo(out, "true", 4);
			else
				appendBinaryStringInfo(out, "false", 5);
			break;
		default:
			elog(ERROR, "unexpected jsonb scalar type %d", (int) v->type);
	}
}

/*
 * Append the JSON text of a jsonb value with no insignificant white space,
 * unlike jsonb_out's "key": value style.  Kafka consumers get exactly this.
 */
void
outbox_append_compact_json(StringInfo out, Jsonb *jb)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		need_comma = false;
	bool		raw_scalar = JB_ROOT_IS_SCALAR(jb);

	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_ARRAY:
				if (need_comma)
					appendStringInfoCharMacro(out, ',');
				if (!raw_scalar)
					appendStringInfoCharMacro(out, '[');
				need_comma = false;
				break;
			case WJB_BEGIN_OBJECT:
				if (need_comma)
					appendStringInfoCharMacro(out, ',');
				appendStringInfoCharMacro(out, '{');
				need_comma = false;
				break;
			case WJB_END_ARRAY:
				if (!raw_scalar)
					appendStringInfoCharMacro(out, ']');
				need_comma = true;
				break;
			case WJB_END_OBJECT:
				appendStringInfoCharMacro(out, '}');
				need_comma = true;
				break;
			case WJB_KEY:
				if (need_comma)
					appendStringInfoCharMacro(out, ',');
				outbox_append_json_string(out, v.val.string.val, v.val.string.len);
				appendStringInfoCharMacro(out, ':');
				need_comma = false;
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				if (need_comma)
					appendStringInfoCharMacro(out, ',');
				append_scalar(out, &v);
				need_comma = true;
				break;
			default:
				elog(ERROR, "unexpected jsonb iterator token %d", (int) tok);
		}
	}
}

/* ---------------------------------------------------------------------
 * Emitted message codec
 * ---------------------------------------------------------------------
 */

static void
append_int32(StringInfo out, int32 v)
{
	uint32		n = pg_hton32((uint32) v);

	appendBinaryStringInfo(out, (char *) &n, 4);
}

static void
append_int64(StringInfo out, int64 v)
{
	uint64		n = pg_hton64((uint64) v);

	appendBinaryStringInfo(out, (char *) &n, 8);
}

static void
append_jsonb_field(StringInfo out, Jsonb *jb)
{
	if (jb == NULL)
	{
		append_int32(out, -1);
		return;
	}
	append_int32(out, (int32) VARSIZE_ANY_EXHDR(jb));
	appendBinaryStringInfo(out, VARDATA_ANY(jb), VARSIZE_ANY_EXHDR(jb));
}

/* Encode an event as the content of an "outbox" logical message. */
void
outbox_message_encode(StringInfo out, const OutboxEvent *ev)
{
	appendStringInfoChar(out, OUTBOX_MESSAGE_MAGIC);
	appendStringInfoChar(out, OUTBOX_MESSAGE_VERSION);
	append_int64(out, ev->has_id ? ev->id : 0);
	appendStringInfoChar(out, ev->has_id ? 1 : 0);
	append_int32(out, ev->attempts);
	append_int32(out, ev->topic_len);
	appendBinaryStringInfo(out, ev->topic, ev->topic_len);
	if (ev->key == NULL)
		append_int32(out, -1);
	else
	{
		append_int32(out, ev->key_len);
		appendBinaryStringInfo(out, ev->key, ev->key_len);
	}
	append_jsonb_field(out, ev->payload);
	append_jsonb_field(out, ev->headers);
}

static bool
read_bytes(const char **p, const char *end, Size n, const char **bytes)
{
	if ((Size) (end - *p) < n)
		return false;
	*bytes = *p;
	*p += n;
	return true;
}

static bool
read_int32(const char **p, const char *end, int32 *v)
{
	const char *b;
	uint32		n;

	if (!read_bytes(p, end, 4, &b))
		return false;
	memcpy(&n, b, 4);
	*v = (int32) pg_ntoh32(n);
	return true;
}

static bool
read_int64(const char **p, const char *end, int64 *v)
{
	const char *b;
	uint64		n;

	if (!read_bytes(p, end, 8, &b))
		return false;
	memcpy(&n, b, 8);
	*v = (int64) pg_ntoh64(n);
	return true;
}

/* Read a length-prefixed jsonb into a freshly palloc'd, aligned datum. */
static bool
read_jsonb_field(const char **p, const char *end, Jsonb **jb)
{
	int32		len;
	const char *b;
	Jsonb	   *copy;

	if (!read_int32(p, end, &len))
		return false;
	if (len == -1)
	{
		*jb = NULL;
		return true;
	}
	if (len < (int32) sizeof(uint32) || !read_bytes(p, end, len, &b))
		return false;
	copy = (Jsonb *) palloc(VARHDRSZ + len);
	SET_VARSIZE(copy, VARHDRSZ + len);
	memcpy(VARDATA(copy), b, len);
	if (!jsonb_container_valid(&copy->root, (uint32) len, 0))
		return false;
	*jb = copy;
	return true;
}

/*
 * Is this a well-formed jsonb container of len bytes?  An emitted message
 * carries raw jsonb bytes, and the jsonb iterator trusts every offset it
 * reads: corrupt bytes must be refused before anything walks them, or the
 * decoder would read out of bounds.  Checks the layout (flags, counts,
 * offsets and lengths, alignment padding, keys are strings, nesting) and
 * that strings are valid in the database encoding.  It does not check the
 * digits inside numerics (garbage digits print oddly but safely) nor that
 * object keys are sorted (only lookups, which the decoder does not do,
 * depend on that).
 */
static bool
jsonb_container_valid(const JsonbContainer *jc, uint32 len, int depth)
{
	uint32		header;
	uint32		count;
	uint32		nchildren;
	uint32		datalen;
	uint32		offset = 0;
	const char *base;
	bool		is_object;
	uint32		i;

	if (depth > OUTBOX_MAX_JSONB_DEPTH || len < sizeof(uint32))
		return false;
	header = jc->header;
	count = header & JB_CMASK;
	is_object = (header & JB_FOBJECT) != 0;
	if (is_object)
	{
		if ((header & (JB_FARRAY | JB_FSCALAR)) != 0)
			return false;
		nchildren = count * 2;
	}
	else if ((header & JB_FARRAY) != 0)
	{
		if ((header & JB_FSCALAR) != 0 && (count != 1 || depth != 0))
			return false;
		nchildren = count;
	}
	else
		return false;

	if ((uint64) nchildren * sizeof(JEntry) > len - sizeof(uint32))
		return false;
	datalen = len - sizeof(uint32) - nchildren * sizeof(JEntry);
	base = (const char *) &jc->children[nchildren];

	for (i = 0; i < nchildren; i++)
	{
		JEntry		je = jc->children[i];
		uint32		start = offset;
		uint32		end;
		uint32		aligned;

		/* same rule as JBE_ADVANCE_OFFSET */
		if (JBE_HAS_OFF(je))
			end = JBE_OFFLENFLD(je);
		else
			end = start + JBE_OFFLENFLD(je);
		if (end < start || end > datalen)
			return false;
		offset = end;

		if (is_object && i < count && !JBE_ISSTRING(je))
			return false;

		if (JBE_ISSTRING(je))
		{
			if (!pg_verify_mbstr(GetDatabaseEncoding(), base + start,
								 (int) (end - start), true))
				return false;
		}
		else if (JBE_ISNUMERIC(je) || JBE_ISCONTAINER(je))
		{
			aligned = INTALIGN(start);
			if (aligned > end || end - aligned < sizeof(uint32))
				return false;
			if (JBE_ISNUMERIC(je))
			{
				const char *num = base + aligned;
				uint16		nhdr;

				/*
				 * A plain 4-byte-header varlena of the stated size, holding
				 * at least numeric's uint16 header word, and the int16
				 * weight too unless that word has numeric.c's 0x8000 bit
				 * (short or special format) set.
				 */
				if (!VARATT_IS_4B_U(num) || VARSIZE(num) != end - aligned ||
					VARSIZE(num) < VARHDRSZ + sizeof(uint16))
					return false;
				memcpy(&nhdr, num + VARHDRSZ, sizeof(uint16));
				if ((nhdr & 0x8000) == 0 &&
					VARSIZE(num) < VARHDRSZ + 2 * sizeof(uint16))
					return false;
			}
			else if (!jsonb_container_valid((const JsonbContainer *) (base + aligned),
											end - aligned, depth + 1))
				return false;
		}
		else if (JBE_ISNULL(je) || JBE_ISBOOL(je))
		{
			if (end != start)
				return false;
		}
		else
			return false;
	}
	return true;
}

/*
 * Decode the content of an "outbox" logical message, without its
 * authentication code (see msgauth.h).  Returns false with a reason in
 * *problem for content that is not our encoding; never throws for bad
 * input.  Borrowed pointers point into data
 * or into memory palloc'd in the current context.
 */
bool
outbox_message_decode(const char *data, Size len, OutboxEvent *ev,
					  const char **problem)
{
	const char *p = data;
	const char *end = data + len;
	const char *b;
	int32		n;
	int64		id;

	*problem = NULL;
	ev->payload_json = NULL;
	ev->payload_json_len = 0;
	if (len < 2 || data[0] != OUTBOX_MESSAGE_MAGIC)
	{
		*problem = _("The message content is not outbox-encoded.");
		return false;
	}
	if (data[1] != OUTBOX_MESSAGE_VERSION)
	{
		*problem = _("The message was encoded by an unknown outbox message version.");
		return false;
	}
	p += 2;

	if (!read_int64(&p, end, &id) || !read_bytes(&p, end, 1, &b))
		goto truncated;
	ev->id = id;
	ev->has_id = (*b != 0);
	if (!read_int32(&p, end, &ev->attempts))
		goto truncated;

	if (!read_int32(&p, end, &n) || n < 0 || !read_bytes(&p, end, n, &b))
		goto truncated;
	ev->topic = b;
	ev->topic_len = n;

	if (!read_int32(&p, end, &n))
		goto truncated;
	if (n == -1)
	{
		ev->key = NULL;
		ev->key_len = 0;
	}
	else
	{
		if (n < 0 || !read_bytes(&p, end, n, &b))
			goto truncated;
		if (!pg_verify_mbstr(GetDatabaseEncoding(), b, n, true))
		{
			*problem = _("The message key is not valid in the database encoding.");
			return false;
		}
		ev->key = b;
		ev->key_len = n;
	}

	if (!read_jsonb_field(&p, end, &ev->payload) ||
		!read_jsonb_field(&p, end, &ev->headers))
		goto truncated;
	if (p != end)
	{
		*problem = _("The message has trailing bytes after the encoded event.");
		return false;
	}
	return true;

truncated:
	*problem = _("The message content is truncated or corrupt.");
	return false;
}
