/*
 * DebeziumOutbox.java
 *    Debezium's PostgreSQL connector with its Outbox Event Router (the SMT
 *    io.debezium.transforms.outbox.EventRouter), run by Debezium's embedded
 *    engine in this JVM, for outbox's side-by-side benchmark and record
 *    comparison test.
 *
 *    java -cp 'LIBS/*' outbox.bench.DebeziumOutbox CONFIG.properties...
 *
 *    Each properties file is one engine (one connector, its own slot and
 *    publication); all engines run at once in this JVM.  Every property is
 *    handed to Debezium as it is (connector, transforms.*, key.converter.*,
 *    value.converter.*, header.converter.*, offset.*, ...), except the ones
 *    starting with "peer.", which are this program's:
 *
 *      peer.sink=kafka|file   kafka: produce each record with a KafkaProducer
 *                             (peer.producer.* is its configuration);
 *                             file: write each record as one JSON line to
 *                             peer.file
 *      peer.expect=N          stop once N records are delivered (acknowledged
 *                             by Kafka, or written); 0: run until SIGTERM
 *      peer.timeout.s=S       give up (exit status 1) after S seconds
 *      peer.stats=PATH        write one JSON line of figures at the end
 *
 *    The engine runs the SMT and the converters itself (the converting async
 *    engine, format ClientProvided: key.converter.class,
 *    value.converter.class and header.converter.class name Kafka Connect's
 *    converters, as in a Connect worker's configuration).  The records it
 *    hands over are then what a Kafka Connect worker would produce: topic,
 *    key and value bytes, header bytes, the SMT's timestamp and partition.
 *    The kafka sink produces them as Debezium Server's Kafka sink does: the
 *    whole batch is sent, the callbacks are awaited, then the batch's
 *    offsets are marked processed.
 *
 * bench/peers/debezium/src/main/java/outbox/bench/DebeziumOutbox.java
 */
package outbox.bench;

import java.io.BufferedWriter;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.connect.source.SourceRecord;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;

import io.debezium.embedded.ClientProvided;
import io.debezium.embedded.EmbeddedEngineChangeEvent;
import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.Header;

public final class DebeziumOutbox
{
	private static final long T0 = System.currentTimeMillis();

	/* One engine and where its records go. */
	private static final class Peer implements DebeziumEngine.ChangeConsumer<ChangeEvent<Object, Object>>
	{
		final String name;
		final Properties engineProps = new Properties();
		final Properties producerProps = new Properties();
		final String sink;
		final long expect;
		final String statsPath;
		final CountDownLatch done = new CountDownLatch(1);
		final AtomicLong delivered = new AtomicLong();
		final AtomicReference<String> failure = new AtomicReference<>();
		volatile long firstMs = -1;
		volatile long lastMs = -1;
		long batches;
		KafkaProducer<byte[], byte[]> producer;
		BufferedWriter out;
		JsonFactory json = new JsonFactory();
		DebeziumEngine<ChangeEvent<Object, Object>> engine;

		Peer(String path) throws IOException
		{
			Properties all = new Properties();
			try (InputStream in = new FileInputStream(path))
			{
				all.load(in);
			}
			name = path;
			for (String k : all.stringPropertyNames())
			{
				if (k.startsWith("peer.producer."))
					producerProps.put(k.substring("peer.producer.".length()), all.getProperty(k));
				else if (!k.startsWith("peer."))
					engineProps.put(k, all.getProperty(k));
			}
			sink = all.getProperty("peer.sink", "file");
			expect = Long.parseLong(all.getProperty("peer.expect", "0"));
			statsPath = all.getProperty("peer.stats");
			if (sink.equals("kafka"))
			{
				/* defaults of an outbox deployment: nothing lost, nothing reordered */
				producerProps.putIfAbsent(ProducerConfig.ACKS_CONFIG, "all");
				producerProps.putIfAbsent(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
				producerProps.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
				producerProps.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
				producer = new KafkaProducer<>(producerProps);
			}
			else if (sink.equals("file"))
				out = new BufferedWriter(new OutputStreamWriter(
						Files.newOutputStream(Paths.get(all.getProperty("peer.file"))), StandardCharsets.UTF_8));
			else
				throw new IllegalArgumentException("peer.sink must be kafka or file, not " + sink);
		}

		@Override
		public void handleBatch(List<ChangeEvent<Object, Object>> records,
								DebeziumEngine.RecordCommitter<ChangeEvent<Object, Object>> committer)
				throws InterruptedException
		{
			if (firstMs < 0 && !records.isEmpty())
				firstMs = System.currentTimeMillis();
			batches++;
			try
			{
				if (producer != null)
					produce(records);
				else
					write(records);
			}
			catch (Exception e)
			{
				fail("delivery failed: " + e);
				throw new InterruptedException(e.toString());
			}
			for (ChangeEvent<Object, Object> r : records)
				committer.markProcessed(r);
			committer.markBatchFinished();
			long n = delivered.addAndGet(records.size());
			lastMs = System.currentTimeMillis();
			if (expect > 0 && n >= expect)
				done.countDown();
		}

		private void produce(List<ChangeEvent<Object, Object>> records) throws Exception
		{
			CountDownLatch acked = new CountDownLatch(records.size());
			AtomicReference<Exception> error = new AtomicReference<>();
			for (ChangeEvent<Object, Object> r : records)
			{
				SourceRecord s = ((EmbeddedEngineChangeEvent<?, ?, ?>) r).sourceRecord();
				RecordHeaders h = new RecordHeaders();
				for (Header<Object> x : r.<Object>headers())
					h.add(x.getKey(), (byte[]) x.getValue());
				producer.send(new ProducerRecord<>(r.destination(), s.kafkaPartition(), s.timestamp(),
						(byte[]) r.key(), (byte[]) r.value(), h),
						(md, e) -> {
							if (e != null)
								error.compareAndSet(null, e);
							acked.countDown();
						});
			}
			acked.await();
			if (error.get() != null)
				throw error.get();
		}

		private void write(List<ChangeEvent<Object, Object>> records) throws IOException
		{
			for (ChangeEvent<Object, Object> r : records)
			{
				SourceRecord s = ((EmbeddedEngineChangeEvent<?, ?, ?>) r).sourceRecord();
				java.io.StringWriter line = new java.io.StringWriter();
				try (JsonGenerator g = json.createGenerator(line))
				{
					g.writeStartObject();
					g.writeStringField("topic", r.destination());
					if (s.kafkaPartition() == null)
						g.writeNullField("partition");
					else
						g.writeNumberField("partition", s.kafkaPartition());
					if (s.timestamp() == null)
						g.writeNullField("timestamp");
					else
						g.writeNumberField("timestamp", s.timestamp());
					g.writeStringField("key", text(r.key()));
					g.writeStringField("value", text(r.value()));
					g.writeArrayFieldStart("headers");
					for (Header<Object> x : r.<Object>headers())
					{
						g.writeStartArray();
						g.writeString(x.getKey());
						g.writeString(text(x.getValue()));
						g.writeEndArray();
					}
					g.writeEndArray();
					g.writeEndObject();
				}
				out.write(line.toString());
				out.write('\n');
			}
			out.flush();
		}

		private static String text(Object bytes)
		{
			return bytes == null ? null : new String((byte[]) bytes, StandardCharsets.UTF_8);
		}

		void fail(String why)
		{
			failure.compareAndSet(null, why);
			done.countDown();
		}

		void close()
		{
			try
			{
				if (engine != null)
					engine.close();
			}
			catch (IOException e)
			{
				System.err.println(name + ": closing the engine: " + e);
			}
			if (producer != null)
				producer.close();
			try
			{
				if (out != null)
					out.close();
			}
			catch (IOException e)
			{
				fail("closing the output: " + e);
			}
		}
	}

	/* Peak and current resident memory of this JVM, from /proc, in kB. */
	private static String memory()
	{
		long hwm = -1, rss = -1;
		try
		{
			for (String l : Files.readAllLines(Paths.get("/proc/self/status")))
			{
				if (l.startsWith("VmHWM:"))
					hwm = Long.parseLong(l.replaceAll("[^0-9]", ""));
				else if (l.startsWith("VmRSS:"))
					rss = Long.parseLong(l.replaceAll("[^0-9]", ""));
			}
		}
		catch (IOException e)
		{
			/* not on Linux: leave -1 */
		}
		return "\"vm_hwm_kb\":" + hwm + ",\"vm_rss_kb\":" + rss;
	}

	public static void main(String[] args) throws Exception
	{
		if (args.length == 0)
		{
			System.err.println("usage: DebeziumOutbox CONFIG.properties...");
			System.exit(2);
		}
		long timeoutS = 0;
		List<Peer> peers = new ArrayList<>();
		for (String a : args)
		{
			Peer p = new Peer(a);
			Properties raw = new Properties();
			try (InputStream in = new FileInputStream(a))
			{
				raw.load(in);
			}
			timeoutS = Math.max(timeoutS, Long.parseLong(raw.getProperty("peer.timeout.s", "0")));
			peers.add(p);
		}

		ExecutorService pool = Executors.newFixedThreadPool(peers.size());
		for (Peer p : peers)
		{
			p.engine = DebeziumEngine.create(ClientProvided.class, ClientProvided.class, ClientProvided.class)
					.using(p.engineProps)
					.notifying(p)
					.using((success, message, error) -> {
						if (!success || error != null)
							p.fail("engine stopped: " + message + (error != null ? ": " + error : ""));
						else
							p.done.countDown();
					})
					.build();
			pool.execute(p.engine);
		}
		Runtime.getRuntime().addShutdownHook(new Thread(() -> {
			for (Peer p : peers)
				p.done.countDown();
		}));

		int status = 0;
		long deadline = timeoutS > 0 ? T0 + timeoutS * 1000 : Long.MAX_VALUE;
		for (Peer p : peers)
		{
			long left = deadline - System.currentTimeMillis();
			if (!p.done.await(Math.max(left, 1), TimeUnit.MILLISECONDS))
				p.fail("timed out after " + timeoutS + " s with " + p.delivered.get() + " of " + p.expect + " records");
		}
		String mem = memory();
		for (Peer p : peers)
		{
			p.close();
			if (p.expect > 0 && p.delivered.get() < p.expect)
				p.fail("stopped with " + p.delivered.get() + " of " + p.expect + " records");
			String stats = String.format("{\"config\":\"%s\",\"sink\":\"%s\",\"delivered\":%d,\"batches\":%d,"
					+ "\"jvm_start_ms\":%d,\"first_ms\":%d,\"last_ms\":%d,%s,\"error\":%s}",
					p.name, p.sink, p.delivered.get(), p.batches, T0, p.firstMs, p.lastMs, mem,
					p.failure.get() == null ? "null" : "\"" + p.failure.get().replace("\\", "\\\\").replace("\"", "'") + "\"");
			System.out.println(stats);
			if (p.statsPath != null)
				Files.writeString(Paths.get(p.statsPath), stats + "\n");
			if (p.failure.get() != null)
			{
				System.err.println(p.name + ": " + p.failure.get());
				status = 1;
			}
		}
		pool.shutdownNow();
		System.exit(status);
	}
}
