import json
from pathlib import Path

import pytest
from PIL import Image

from awares.data import by_image_size, generate, load_hf, read_jsonl, resolve, write_dataset
from awares.errors import InputError


def test_export_round_trip_and_relative_paths(tmp_path):
    samples = list(generate("test", 5))
    out = write_dataset(iter(samples), tmp_path / "ds")
    lines = (out / "data.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["image"] == "images/test-000000.png"
    records, errors = read_jsonl(out)
    assert errors == [] and [r.id for r in records] == [s.id for s in samples]
    for record, sample in zip(records, samples):
        assert record.question == sample.question and record.answers == sample.answers and record.kind == sample.kind
        assert record.evidence == [b.as_tuple() for b in sample.evidence]
        assert (tmp_path / "ds" / "images" / f"{sample.id}.png").is_file()


def test_records_sort_by_image_pixels_an_unreadable_image_first(tmp_path):
    out = write_dataset(generate("val-all", 6), tmp_path / "ds")
    records, _ = read_jsonl(out)
    (tmp_path / "ds" / "images" / f"{records[3].id}.png").write_bytes(b"not a png")
    ordered = by_image_size(records)
    assert sorted(r.id for r in ordered) == sorted(r.id for r in records) and ordered[0].id == records[3].id
    sizes = [Image.open(r.image).size for r in ordered[1:]]
    assert [w * h for w, h in sizes] == sorted(w * h for w, h in sizes) and len(set(sizes)) > 2


def test_export_resumes_without_duplicates(tmp_path):
    write_dataset(generate("test", 3), tmp_path / "ds")
    write_dataset(generate("test", 6), tmp_path / "ds")
    records, _ = read_jsonl(tmp_path / "ds")
    assert [r.id for r in records] == [f"test-{i:06d}" for i in range(6)]
    assert len((tmp_path / "ds" / "data.jsonl").read_text().splitlines()) == 6


def test_bad_rows_are_reported_and_skipped(tmp_path):
    good = {"id": "a", "image": "a.png", "question": "q?", "answers": ["x"]}
    rows = [
        json.dumps(good),
        "{not json",
        json.dumps({"id": "b", "image": "b.png", "question": "q?"}),
        json.dumps({**good, "id": "c", "answers": []}),
        json.dumps({**good, "id": "d", "evidence": [[5, 5, 1, 1]]}),
        json.dumps({**good, "id": "e", "question": " "}),
        json.dumps(good),
        "",
        json.dumps({**good, "id": "f", "answers": "single", "evidence": [[0, 0, 4, 4]]}),
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(rows) + "\n")
    records, errors = read_jsonl(path)
    assert [r.id for r in records] == ["a", "f"]
    assert records[1].answers == ["single"] and records[1].evidence == [(0, 0, 4, 4)]
    assert [e.line for e in errors] == [2, 3, 4, 5, 6, 7]
    assert "missing field(s) answers" in errors[1].reason and "duplicate id" in errors[5].reason


def test_resolve_synthetic_and_missing(tmp_path):
    records, errors = resolve("synthetic:val:4", cache=tmp_path)
    assert len(records) == 4 and not errors
    for spec in ["synthetic:dev", "synthetic:test:x", "synthetic:test:1:2", "synthetic:test:0", "synthetic:test:-3"]:
        with pytest.raises(InputError):
            resolve(spec, cache=tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        resolve(str(tmp_path / "none"))


def test_hugging_face_datasets_on_disk_and_parquet(tmp_path):
    import datasets

    samples = list(generate("test", 3))
    ds = datasets.Dataset.from_dict(
        {
            "qid": [s.id for s in samples],
            "img": [s.image for s in samples],
            "query": [s.question for s in samples],
            "answers": [s.answers for s in samples],
        }
    ).cast_column("img", datasets.Image())
    ds.save_to_disk(str(tmp_path / "hf"))
    mapping = {"id": "qid", "image": "img", "question": "query"}
    records, errors = load_hf(tmp_path / "hf", mapping)
    assert [r.id for r in records] == [s.id for s in samples] and errors == []
    assert records[0].question == samples[0].question and records[0].evidence == []
    from PIL import Image

    assert Image.open(records[0].image).size == samples[0].image.size
    ds.to_parquet(str(tmp_path / "d.parquet"))
    assert [r.answers for r in load_hf(tmp_path / "d.parquet", mapping)[0]] == [s.answers for s in samples]


def test_hugging_face_rows_are_validated_and_ids_never_write_outside_the_image_folder(tmp_path):
    import datasets

    samples = list(generate("test", 3))
    ds = datasets.Dataset.from_dict(
        {
            "id": ["../../escaped", samples[1].id, "/tmp/abs"],
            "image": [s.image for s in samples],
            "question": [s.question for s in samples],
            "answers": [s.answers for s in samples],
        }
    ).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "hf" / "data"))
    records, errors = load_hf(tmp_path / "hf" / "data")
    assert [r.id for r in records] == [samples[1].id]
    assert [e.line for e in errors] == [1, 3] and all("not a plain name" in e.reason for e in errors)
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*.png")}
    assert written == {Path("hf/data/awares-images") / f"{samples[1].id}.png"}


def test_every_field_is_type_and_range_checked_and_paths_stay_in_the_dataset_folder(tmp_path):
    good = {"id": "a", "image": "a.png", "question": "q?", "answers": ["x"]}
    bad = [  # what each row changes in a good row
        {"image": 5},
        {"image": None},
        {"image": ["a.png"]},
        {"evidence": [[0, 0, float("inf"), 4]]},  # json.dumps writes Infinity and NaN, as careless tools do
        {"evidence": [[0, 0, float("nan"), 4]]},
        {"evidence": [[0, 0, 4]]},
        {"evidence": [[False, False, True, True]]},
        {"kind": ["detail"]},
        {"kind": 3},
        {"id": 1.5},
        {"id": "../x"},
        {"answers": [3]},
        {"image": "../../../../etc/passwd"},
        {"image": "/etc/passwd"},
    ]
    lines = [json.dumps(good)] + [json.dumps({**good, "id": f"r{i}", **change}) for i, change in enumerate(bad)]
    lines += ["[" * 100_000 + "]" * 100_000, json.dumps({**good, "id": "big", "question": "q" * 2_000_000})]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    records, errors = read_jsonl(path)
    assert [r.id for r in records] == ["a"] and [e.line for e in errors] == list(range(2, len(lines) + 1))
    reasons = [e.reason for e in errors]
    assert "outside the dataset folder" in reasons[12] and "outside the dataset folder" in reasons[13]
    assert reasons[-2] == "JSON nested too deeply" and reasons[-1] == "line longer than 1,048,576 bytes"
    outside, _ = read_jsonl(path, allow_outside=True)
    assert [r.image for r in outside[1:]] == [str(tmp_path / "../../../../etc/passwd"), "/etc/passwd"]
