"""Outage benchmark: a tenant database down for 60 s under 20,000 readings/s, then recovery.

    .venv/bin/python bench/outage.py [--quick] [--rate 20000] [--outage 60] [--values 100]

ingestd, PostgreSQL/TimescaleDB (fsync on) and Mosquitto run as separate processes; a QoS 1 publisher
sends MQTT JSON messages of ``--values`` readings at ``--rate`` readings/s and records which messages
the broker acknowledged. Phases: steady load with the database up; the database crashes
(``pg_ctl stop -m immediate``) and stays down for ``--outage`` seconds while the load continues into the
spool; it comes back and ingestd replays the spool while live data keeps flowing; the load continues a
little, stops, and every acknowledged reading is checked in the database.

Prints one JSON object on its last line:

* ``lost`` — acknowledged readings missing from the database; ``duplicated`` — rows stored twice;
* ``spool_peak_bytes`` — largest spool size seen (/metrics, sampled every 250 ms);
* ``replay_points_per_s`` — readings replayed per second of replay work (daemon's per-segment log), with
  ``live_points_per_s`` the live rate it ran next to, and ``replay_vs_live``;
* ``catch_up_s`` — database back → spool empty, of which ``writes_resumed_after_s`` until ingestd
  noticed (jittered breaker retry, ≤ ``pipeline.db_retry_max``); ``peak_rss_mb`` — ingestd's peak RSS;
* ``live_p99_latency_during_replay_s`` — commit latency of live readings from the moment writes
  resumed until the spool was empty (live data goes first, replay fills the gaps).

``--quick``: a 15 s outage (CI-sized); everything else the same.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.drills.support import (  # noqa: E402
    AckingPublisher,
    RssSampler,
    metric,
    metrics_of,
    mqtt_source,
    replay_rates,
    verify_exactly_once,
)
from tests.support.daemon import DaemonProcess, make_config  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402
from tests.support.pg import PgServer  # noqa: E402


def wait(predicate, timeout: float, what: str, interval: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def count(pg: PgServer, db: str) -> int:
    try:
        return int(pg.execute("SELECT count(*) FROM readings", db)[0][0])  # type: ignore[call-overload]
    except Exception:
        return -1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rate", type=float, default=20_000)
    ap.add_argument("--outage", type=float, default=None)
    ap.add_argument("--values", type=int, default=100)
    args = ap.parse_args()
    outage = args.outage or (15.0 if args.quick else 60.0)
    before, after = (5.0, 5.0) if args.quick else (10.0, 10.0)

    pg = PgServer(timescaledb=True, fsync=True)
    pg.start()
    broker = Mosquitto()
    broker.start()
    db = pg.create_database("bench")
    state = Path(tempfile.mkdtemp(prefix="ingestd-outage-"))
    prefix = f"o{uuid.uuid4().hex[:6]}"
    cfg = make_config(state_dir=state, tenants=[{"slug": "acme", "dsn": pg.dsn(db), "pool": {"connect_timeout": "2s"}}],
                      sources=[mqtt_source(broker, prefix, connection={
                          "host": "127.0.0.1", "port": broker.port, "client_id": f"ingestd-{prefix}",
                          "receive_maximum": 2000})],
                      daemon={"log_level": "info"})
    cfg["api"] = {"listen": "127.0.0.1:0"}
    proc = DaemonProcess(cfg)
    result: dict[str, object] = {"bench": "outage", "quick": args.quick, "rate": args.rate, "outage_s": outage,
                                 "values_per_message": args.values}
    pub = None
    rss = None
    spool_peak = [0.0]
    db_up_since: list[float] = []  # [time the tenant database was last seen taking writes again]
    stop = threading.Event()
    try:
        proc.start()
        assert proc.proc is not None
        rss = RssSampler(proc.proc.pid, interval=0.25)
        wait(lambda: metric(metrics_of(proc), "ingestd_source_up", source="field") == 1, 30, "source up")
        pub = AckingPublisher(broker.port, prefix, gateways=50, values=args.values)

        def watch() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    text = metrics_of(proc)
                    spool_peak[0] = max(spool_peak[0], metric(text, "ingestd_spool_bytes"))
                    up = metric(text, "ingestd_tenant_db_up", tenant="acme") == 1
                    if up and not db_up_since:
                        db_up_since.append(time.time())
                    elif not up:
                        db_up_since.clear()
                stop.wait(0.05)

        threading.Thread(target=watch, daemon=True).start()
        pub.start_steady(args.rate)
        t_load = time.monotonic()
        wait(lambda: time.monotonic() - t_load >= before, before + 10, "steady phase", 0.2)
        pg.stop("immediate")
        t_down = time.monotonic()
        wait(lambda: time.monotonic() - t_down >= outage, outage + 10, "outage", 0.2)
        spooled = metric(metrics_of(proc), "ingestd_points_spooled_total")
        pg.start()
        t_up_wall, t_up = time.time(), time.monotonic()
        wait(lambda: metric(metrics_of(proc), "ingestd_spool_bytes") == 0, 600, "spool replayed", 0.05)
        catch_up = time.monotonic() - t_up
        t_caught_wall = time.time()
        wait(lambda: time.monotonic() - t_up >= catch_up + after, catch_up + after + 10, "after phase", 0.2)
        pub.stop()
        pub.wait_acked(120)
        expected = len(pub.acked) * pub.values
        wait(lambda: count(pg, db) >= expected, 300, "every acknowledged reading stored", 0.5)
        text = metrics_of(proc)
        proc.terminate()
        stop.set()
        rss.stop()
        replayed, replay_s = replay_rates(proc.log_tail(10**9))
        v = verify_exactly_once(pg, db, pub)
        resumed = db_up_since[0] if db_up_since and db_up_since[0] >= t_up_wall else t_up_wall
        lat = pg.execute(
            "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM b.committed_at - r.ts)), count(*) "
            "FROM readings r JOIN ingest_batches b ON b.seq = r.batch_seq "
            f"WHERE r.ts >= to_timestamp({resumed + 0.5}) AND r.ts < to_timestamp({t_caught_wall})", db)[0]
        live = float(args.rate)
        replay_pps = replayed / replay_s if replay_s else 0.0
        result.update(
            published_points=pub.points_sent, acked_points=expected, stored_points=v.stored_rows,
            lost=len(v.lost_messages) * pub.values + len(v.partial_messages), duplicated=v.duplicated_rows,
            phantom_messages=v.phantom_messages,
            spooled_points=int(spooled), replayed_points=replayed, spool_peak_bytes=int(spool_peak[0]),
            replay_points_per_s=round(replay_pps), live_points_per_s=round(live),
            replay_vs_live=round(replay_pps / live, 1) if live else None,
            catch_up_s=round(catch_up, 2),
            end_to_end_replay_points_per_s=round(spooled / catch_up) if catch_up else None,
            writes_resumed_after_s=round(resumed - t_up_wall, 2),
            live_p99_latency_during_replay_s=round(float(lat[0]), 3) if lat[0] is not None else None,
            live_rows_during_replay=int(lat[1]),  # type: ignore[call-overload]
            dropped=metric(text, "ingestd_points_dropped_total"),
            peak_rss_mb=round(rss.peak(), 1), rss_before_outage_mb=round(rss.at(t_down), 1),
        )
    finally:
        stop.set()
        if pub is not None:
            pub.close()
        if rss is not None:
            rss.stop()
        proc.kill()
        broker.close()
        pg.close()
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
