import json

from awares.jsonl import append, done_ids, open_append, rows


def test_a_row_cut_by_a_kill_is_dropped_and_the_next_append_starts_clean(tmp_path):
    log = tmp_path / "out.jsonl"
    with open_append(log) as out:
        append(out, {"id": "a"})
        append(out, {"id": "b"})
    log.write_text(log.read_text() + '{"id": "c", "x"')  # a writer killed mid-row
    assert done_ids(log) == {"a", "b"}
    with open_append(log) as out:
        append(out, {"id": "c"})
    assert [r["id"] for r in rows(log)] == ["a", "b", "c"]
    assert all(json.loads(line) for line in log.read_text().splitlines())


def test_missing_file_has_no_rows(tmp_path):
    assert done_ids(tmp_path / "none.jsonl") == set() and list(rows(tmp_path / "none.jsonl")) == []
