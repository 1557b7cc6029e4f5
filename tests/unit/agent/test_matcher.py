import pytest

from procwatch_agent.matcher import COMM_LEN, WatchIndex, comm_of, full_names, matches

pytestmark = pytest.mark.unit


def test_short_name_matches_comm_exactly_like_pgrep_x():
    assert matches("nginx", "nginx")
    assert not matches("nginx", "nginx-debug")
    assert not matches("nginx", "ngin")
    assert not matches("nginx", "NGINX")


def test_short_name_ignores_cmdline():
    # pgrep -x looks only at the comm, never at the command line.
    assert not matches("nginx", "bash", cmdline0="/usr/sbin/nginx")
    assert matches("nginx", "nginx", cmdline0="nginx: worker process")


def test_exactly_fifteen_chars_is_a_plain_comm_match():
    name = "a" * COMM_LEN
    assert matches(name, name)
    # psutil may report the cmdline-extended name; its comm is still the first 15 chars.
    assert matches(name, name + "xyz")


def test_long_name_needs_truncated_comm_and_full_cmdline_basename():
    watched = "my-long-service-a"  # 17 chars
    comm = comm_of(watched)
    assert comm == "my-long-service"
    assert matches(watched, comm, cmdline0="/opt/bin/my-long-service-a")
    assert matches(watched, comm, cmdline0="my-long-service-a")
    assert not matches(watched, comm, cmdline0="/opt/bin/my-long-service-b")
    assert not matches(watched, comm, cmdline0=None, exe=None)
    # comm must agree even when the cmdline says the right thing
    assert not matches(watched, "other", cmdline0="/opt/bin/my-long-service-a")


def test_long_name_falls_back_to_exe_basename():
    watched = "my-long-service-a"
    assert matches(watched, comm_of(watched), cmdline0="renamed-title", exe="/usr/lib/x/my-long-service-a")


def test_long_name_with_rewritten_title_uses_first_word():
    watched = "postgres-exporter"
    assert matches(watched, comm_of(watched), cmdline0="/usr/bin/postgres-exporter --web.listen=:9187")


def test_full_names_ignores_empty_parts():
    assert full_names(None, None) == set()
    assert full_names("", "/") == set()


def test_index_candidates_and_full_name_need():
    index = WatchIndex.of(["nginx", "my-long-service-a", "my-long-service-b", "nginx"])
    assert index.names == ("nginx", "my-long-service-a", "my-long-service-b")  # deduplicated, ordered
    assert index.candidates("nginx") == ("nginx",)
    assert index.candidates("sshd") == ()
    assert not index.needs_full_name("nginx")
    assert index.needs_full_name("my-long-service")
    assert index.match("my-long-service", cmdline0="/x/my-long-service-b") == ["my-long-service-b"]
    assert index.match("nginx") == ["nginx"]


def test_index_fifteen_char_name_and_longer_name_sharing_a_prefix():
    short, long = "a" * 15, "a" * 15 + "-worker"
    index = WatchIndex.of([short, long])
    # The long process's comm is the short name, so pgrep -x for the short name counts it too.
    assert index.match(short, cmdline0="/bin/" + long) == [short, long]
    assert index.match(short, cmdline0="/bin/" + short) == [short]
