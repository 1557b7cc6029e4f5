"""Cluster mode and partitions by server (issue 20), as pure functions: subject mapping, stream
declarations, the settings each replica derives, the embedded cluster's URLs and config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from procwatch.embedded import EmbeddedNatsCluster
from procwatch_alerter.settings import AlerterSettings
from procwatch_contracts import subjects
from procwatch_ingest.settings import IngestSettings
from procwatch_messaging.streams import StreamLimits, limits_for, stream_configs
from procwatch_runtime.settings import ConnectionSettings

pytestmark = pytest.mark.unit


def test_partition_of_is_fnv1a_of_the_server_id_token():
    # The FNV-1a 32 reference vectors (what NATS' partition() hashes; the integration test checks the mapping).
    assert (subjects.fnv1a_32(b""), subjects.fnv1a_32(b"a"), subjects.fnv1a_32(b"foobar")) == (
        0x811C9DC5, 0xE40C292C, 0xBF9CF968)
    assert subjects.partition_of(4711, 1000) == subjects.fnv1a_32(b"4711") % 1000
    assert {subjects.partition_of(sid, 2) for sid in range(1, 50)} == {0, 1}
    assert all(subjects.partition_of(sid, 1) == 0 for sid in range(1, 50))


def test_partition_subjects_keep_the_server_id_last():
    assert subjects.partition_transform("agent.samples.*", 2) == "agent.samples.{{partition(2,1)}}.{{wildcard(1)}}"
    assert subjects.partition_filter("samples.recorded.*", 1) == "samples.recorded.1.*"
    assert subjects.server_id_from_subject("agent.samples.1.4711") == 4711


def test_streams_carry_replicas_and_partition_transforms():
    configs = {c.name: c for c in stream_configs(StreamLimits(replicas=3, ingest_partitions=2, alerter_partitions=4))}
    assert {c.num_replicas for c in configs.values()} == {3}
    assert configs["AGENT_SAMPLES"].subject_transform.dest == "agent.samples.{{partition(2,1)}}.{{wildcard(1)}}"
    assert configs["SAMPLE_EVENTS"].subject_transform.dest == "samples.recorded.{{partition(4,1)}}.{{wildcard(1)}}"
    assert configs["PROCESS_EVENTS"].subject_transform.src == "processes.changed.*"
    assert configs["ALERTS"].subject_transform is None and configs["DEADLETTER"].subject_transform is None


def test_unpartitioned_streams_are_unchanged():
    configs = stream_configs(StreamLimits())
    assert all(c.subject_transform is None and c.num_replicas == 1 for c in configs)
    assert configs[0].subjects == [subjects.AGENT_SAMPLES_SUBJECTS]


def test_every_service_declares_the_streams_from_the_shared_settings(monkeypatch):
    monkeypatch.setenv("PROCWATCH_NATS_REPLICAS", "3")
    monkeypatch.setenv("PROCWATCH_INGEST_PARTITIONS", "2")
    monkeypatch.setenv("PROCWATCH_ALERTER_PARTITIONS", "3")
    limits = limits_for(ConnectionSettings(), StreamLimits(events_max_age_s=60))
    assert (limits.replicas, limits.ingest_partitions, limits.alerter_partitions) == (3, 2, 3)
    assert limits.events_max_age_s == 60


def test_nats_url_may_list_a_clusters_nodes(monkeypatch):
    monkeypatch.setenv("NATS_URL", "nats://u:p@127.0.0.1:1, nats://u:p@127.0.0.1:2,")
    assert ConnectionSettings().nats_servers == ["nats://u:p@127.0.0.1:1", "nats://u:p@127.0.0.1:2"]


def test_ingest_partition_picks_its_filter_and_durable(monkeypatch):
    assert (IngestSettings().consumer_subject, IngestSettings().consumer_durable) == ("agent.samples.*",
                                                                                      "procwatch-ingest")
    monkeypatch.setenv("PROCWATCH_INGEST_PARTITIONS", "2")
    monkeypatch.setenv("PROCWATCH_INGEST_PARTITION", "1")
    s = IngestSettings()
    assert (s.consumer_subject, s.consumer_durable) == ("agent.samples.1.*", "procwatch-ingest-1")
    monkeypatch.setenv("PROCWATCH_INGEST_PARTITION", "2")
    with pytest.raises(ValidationError):
        IngestSettings()


def test_alerter_partition_picks_its_filters_durable_and_ingests_durables(monkeypatch):
    monkeypatch.setenv("PROCWATCH_ALERTER_PARTITIONS", "2")
    monkeypatch.setenv("PROCWATCH_ALERTER_PARTITION", "1")
    monkeypatch.setenv("PROCWATCH_INGEST_PARTITIONS", "3")
    s = AlerterSettings()
    assert (s.sample_subject, s.process_subject, s.durable) == ("samples.recorded.1.*", "processes.changed.1.*",
                                                               "alerter-1")
    assert s.ingest_durables == ["procwatch-ingest-0", "procwatch-ingest-1", "procwatch-ingest-2"]
    monkeypatch.setenv("PROCWATCH_ALERTER_PARTITIONS", "1")
    with pytest.raises(ValidationError):
        AlerterSettings()


def test_embedded_cluster_routes_authenticate_and_urls_list_every_node(tmp_path):
    cluster = EmbeddedNatsCluster(tmp_path, 3, ports={"nats-1": 4001, "nats-2": 4002, "nats-3": 4003,
                                                      "nats-1-cluster": 6001, "nats-2-cluster": 6002,
                                                      "nats-3-cluster": 6003})
    urls = cluster.url.split(",")
    assert [u.rsplit(":", 1)[1] for u in urls] == ["4001", "4002", "4003"]
    assert len({n.password for n in cluster.nodes}) == 1 and len({n.issuer_seed for n in cluster.nodes}) == 1
    config = cluster.nodes[1].render_config()
    route_password = cluster.nodes[1].route_password
    assert f'authorization {{ user: "route", password: "{route_password}" }}' in config
    assert f"nats-route://route:{route_password}@127.0.0.1:6001" in config
    assert "127.0.0.1:6003" in config and "127.0.0.1:6002\"\n" in config  # peers, and its own listen port
    assert "auth_callout" in config and 'server_name: "nats-2"' in config
    assert cluster.agent_url(7, "k").count("agent-7:k@") == 3
