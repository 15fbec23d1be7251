"""The wrk output reader of the load helper: the counts and, from its tally script, the statuses."""

from tests.swarm.load import STATUS_SCRIPT, parse

OUTPUT = """Running 12s test @ http://127.0.0.1:1/
  13236 requests in 12.02s, 3.63MB read
  Socket errors: connect 0, read 2, write 0, timeout 0
  Non-2xx or 3xx responses: 65
Requests/sec:   1101.24
status 503: 60
status 502: 5
"""


def test_statuses_from_the_tally_are_read_and_shown():
    result = parse(OUTPUT)
    assert (result.requests, result.non_2xx, result.read_errors) == (13236, 65, 2)
    assert result.statuses == {502: 5, 503: 60}
    assert result.failed == 67
    assert result.summary().endswith("timeout=0 502=5 503=60)")


def test_without_a_tally_no_status_is_made_up():
    result = parse(OUTPUT.split("status 503")[0])
    assert result.statuses == {} and result.failed == 67


def test_the_tally_script_prints_the_lines_the_reader_reads():
    assert 'string.format("status %d: %d\\n", status, count)' in STATUS_SCRIPT
