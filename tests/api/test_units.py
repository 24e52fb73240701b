"""Pure parts of the query API: downsampling, parameters, cursors, token index, host rule, metrics filter."""

from __future__ import annotations

import numpy as np
import pytest

from ingestd.api.downsample import lttb, minmax, rebucket
from ingestd.api.errors import ApiError
from ingestd.api.params import decode_cursor, encode_cursor, parse_duration_s, parse_time, time_range
from ingestd.api.routes_ops import filter_metrics
from ingestd.api.security import TokenIndex, host_tenant
from ingestd.api.stream import StreamClient
from ingestd.auth import hash_token, hash_token_scrypt, new_token, verify_token
from ingestd.config.model import ApiToken, TenantConfig


def test_minmax_keeps_extremes_and_order() -> None:
    ts = np.arange(10_000, dtype=np.int64) * 1_000_000
    value = np.sin(np.arange(10_000) / 100.0)
    value[5000] = 42.0
    value[7000] = -42.0
    idx = minmax(ts, value, 200)
    assert idx.shape[0] <= 200
    assert (np.diff(idx) > 0).all()
    assert 5000 in idx and 7000 in idx


def test_minmax_keeps_a_gap_for_all_bad_buckets() -> None:
    ts = np.arange(1000, dtype=np.int64)
    value = np.ones(1000)
    value[400:600] = np.nan
    idx = minmax(ts, value, 20)
    assert np.isnan(value[idx]).any(), "an all-BAD bucket must stay visible as a gap"
    assert idx.shape[0] <= 21


def test_lttb_bounds_and_endpoints() -> None:
    ts = np.arange(5000, dtype=np.int64)
    value = np.random.default_rng(1).normal(size=5000)
    value[2500] = 100.0
    idx = lttb(ts, value, 100)
    assert idx.shape[0] == 100
    assert idx[0] == 0 and idx[-1] == 4999
    assert 2500 in idx, "LTTB keeps a spike"
    assert (np.diff(idx) > 0).all()
    assert lttb(ts[:50], value[:50], 100).shape[0] == 50


def test_rebucket_is_exact() -> None:
    cols = {"ts": np.arange(6, dtype=np.int64) * 60, "value": np.array([1.0, 2, 3, 4, 5, 6]),
            "min": np.array([0.5, 2, 3, 4, 5, np.nan]), "max": np.array([1.5, 2, 3, 4, 5, np.nan]),
            "sum": np.array([2.0, 2, 3, 4, 5, np.nan]), "count": np.array([2, 1, 1, 1, 1, 0]),
            "non_good": np.array([0, 0, 1, 0, 0, 3])}
    out = rebucket(cols, 0, 180)
    assert out["ts"].tolist() == [0, 180]
    assert out["count"].tolist() == [4, 2]
    assert out["value"].tolist() == pytest.approx([7 / 4, 9 / 2])
    assert out["min"].tolist() == [0.5, 4.0] and out["max"].tolist() == [3.0, 5.0]
    assert out["non_good"].tolist() == [1, 3]


def test_parse_time_forms() -> None:
    now = 1_700_000_000_000_000
    assert parse_time("now", "start", now=now) == now
    assert parse_time("-24h", "start", now=now) == now - 86_400_000_000
    assert parse_time("now-90m", "start", now=now) == now - 5_400_000_000
    assert parse_time("2023-11-14T22:13:20Z", "start") == now
    assert parse_time("2023-11-14T16:13:20-06:00", "start") == now
    assert parse_time("2023-11-14T22:13:20", "start") == now  # no offset: UTC
    for bad in ("yesterday", "-5y", "2023-13-01", "-99999999w"):
        with pytest.raises(ApiError) as e:
            parse_time(bad, "start", now=now)
        assert e.value.status == 400 and e.value.parameter == "start"


def test_time_range_checks_order() -> None:
    with pytest.raises(ApiError) as e:
        time_range("-1h", "-2h")
    assert e.value.parameter == "end"
    assert parse_duration_s("5m", "max_age") == 300.0
    with pytest.raises(ApiError):
        parse_duration_s("soon", "max_age")


def test_cursor_is_bound_to_kind_and_tenant() -> None:
    c = encode_cursor("changes", "acme", {"x": 5, "s": 9, "b": 1})
    assert decode_cursor(c, "changes", "acme")["s"] == 9
    for kind, tenant, text in (("tags", "acme", c), ("changes", "beta", c), ("changes", "acme", "!!"),
                               ("changes", "acme", "e30")):
        with pytest.raises(ApiError) as e:
            decode_cursor(text, kind, tenant)
        assert e.value.status == 400 and e.value.parameter == "cursor"


def _tenant(slug: str, *tokens: tuple[str, str, list[str]]) -> TenantConfig:
    return TenantConfig(slug=slug, dsn="postgresql://x@127.0.0.1/x",  # type: ignore[arg-type]
                        api_tokens=[ApiToken(name=n, hash=h, scopes=s) for n, h, s in tokens])  # type: ignore[arg-type]


def test_token_index_scopes_and_isolation() -> None:
    a, b, shared, kdf = new_token("acme"), new_token("beta"), new_token(), new_token()
    idx = TokenIndex([
        _tenant("acme", ("dash", hash_token(a), ["read"]), ("both", hash_token(shared), ["admin"]),
                ("kdf", hash_token_scrypt(kdf, log_n=10), ["ack"])),
        _tenant("beta", ("dash", hash_token(b), ["ack"]), ("both", hash_token(shared), ["admin"])),
    ])
    pa, pb, pk = idx.lookup(a), idx.lookup(b), idx.lookup(kdf)
    assert pa is not None and pa.tenant == "acme" and pa.allows("read") and not pa.allows("ack")
    assert pb is not None and pb.tenant == "beta" and pb.allows("read") and pb.allows("ack")
    assert not pb.allows("admin")
    assert pk is not None and pk.tenant == "acme" and pk.allows("ack")
    assert idx.lookup(shared) is None, "a hash configured for two tenants must not authenticate at all"
    assert idx.lookup(a + "x") is None and idx.lookup("") is None and idx.lookup("é" * 10) is None


def test_auth_hashes() -> None:
    t = new_token("acme")
    assert t.startswith("igd_acme_")
    assert verify_token(t, hash_token(t)) and not verify_token(t + "1", hash_token(t))
    h = hash_token_scrypt(t, log_n=10)
    assert verify_token(t, h) and not verify_token(t + "1", h)
    assert not verify_token(t, "scrypt:99:8:1:AAAA:BBBB") and not verify_token(t, "scrypt:garbage")


def test_host_tenant_rules() -> None:
    tenants = frozenset({"acme", "beta"})
    assert host_tenant("acme.api.example.com", "api.example.com", tenants) == "acme"
    assert host_tenant("ACME.api.example.com:8443", "api.example.com", tenants) == "acme"
    assert host_tenant("api.example.com", "api.example.com", tenants) is None
    assert host_tenant("x.y.api.example.com", "api.example.com", tenants) is None
    assert host_tenant("other.example.org", "api.example.com", tenants) is None
    assert host_tenant("beta.scada.local", None, tenants) == "beta"
    assert host_tenant("gw.scada.local", None, tenants) is None
    assert host_tenant("127.0.0.1:8080", None, tenants) is None
    assert host_tenant("[::1]:8080", None, tenants) is None


def test_metrics_filter_keeps_only_own_series() -> None:
    text = "\n".join([
        "# HELP ingestd_points_received_total x", "# TYPE ingestd_points_received_total counter",
        'ingestd_points_received_total{source="field_a",tenant="acme"} 5.0',
        'ingestd_points_received_total{source="field_b",tenant="beta"} 7.0',
        'ingestd_source_up{device="",source="field_b"} 1.0', 'ingestd_source_up{device="",source="field_a"} 1.0',
        'ingestd_breaker_state{kind="tenant_db",name="beta"} 0.0',
        'ingestd_breaker_state{kind="tenant_db",name="acme"} 0.0', "process_cpu_seconds_total 1.0",
    ])
    out = filter_metrics(text, "acme", {"field_a"})
    assert "beta" not in out and "field_b" not in out
    assert 'tenant="acme"' in out and 'name="acme"' in out and "process_cpu_seconds_total" in out


def test_stream_client_drops_oldest_and_counts() -> None:
    c = StreamClient("acme", "id", queue_max=3)
    for i in range(5):
        c.push(str(i).encode())
    assert list(c.queue) == [b"2", b"3", b"4"]
    assert c.dropped == 2 and c.dropped_total == 2
