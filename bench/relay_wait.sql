-- bench/relay_wait.sql
--    bench_relay_wait(): used by bench/drain.sh and
--    bench/peers/debezium/run.sh to time the relay's drain of a backlog.
--
-- Switch the relay on and wait, inside the server (no client round trips),
-- until everything is acknowledged and confirmed.  Returns seconds until
-- the first acknowledgement, until delivered reached n, and until the slot
-- was confirmed past target.
CREATE FUNCTION bench_relay_wait(n bigint, target pg_lsn, timeout_s float8,
                                 OUT first_s float8, OUT delivered_s float8,
                                 OUT confirmed_s float8,
                                 OUT delivered bigint, OUT state text,
                                 OUT last_error text)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
	s record;
	el float8;
BEGIN
	PERFORM pg_reload_conf();
	LOOP
		SELECT * INTO s FROM outbox._relay_status();
		el := extract(epoch FROM clock_timestamp() - t0);
		IF s.delivered > 0 AND first_s IS NULL THEN
			first_s := el;
		END IF;
		IF s.delivered >= n AND delivered_s IS NULL THEN
			delivered_s := el;
		END IF;
		IF s.delivered >= n AND s.in_flight = 0 AND s.confirmed_lsn >= target THEN
			confirmed_s := el;
			EXIT;
		END IF;
		EXIT WHEN el > timeout_s;
		PERFORM pg_sleep(0.02);
	END LOOP;
	delivered := s.delivered;
	state := s.state;
	last_error := s.last_error;
END $$;
