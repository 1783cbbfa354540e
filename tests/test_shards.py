"""shards.py's check of each shard against its record: a shard damaged after it was written (cut at a
line boundary, cut inside a line, a parquet file cut short) is discarded with one line naming it and
made again, so a resumed step ends with every item, each once."""
import json

import pytest

from deliberate_cli import rundir
from deliberate_cli.shards import Shards


def _work(calls):
    def work(start, stop):
        calls.append((start, stop))
        return [{"i": i, "text": f"item {i}"} for i in range(start, stop)]
    return work


def _cut_at_line(path):
    path.write_text(path.read_text().splitlines(keepends=True)[0])


def _cut_inside_line(path):
    text = path.read_text()
    path.write_text(text[:len(text.splitlines()[0]) + 1 + 5])  # the first line and 5 characters of the second


def _cut_parquet(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("fmt,damage,said", [
    ("jsonl", _cut_at_line, "1 of 2 rows"),
    ("jsonl", _cut_inside_line, "1 of 2 rows whole, a line cut short"),
    ("parquet", _cut_parquet, "not a whole parquet file"),
])
def test_a_damaged_shard_is_discarded_with_one_line_and_made_again(tmp_path, capsys, fmt, damage, said):
    shards, calls = Shards(tmp_path, fmt=fmt), []
    assert [r["i"] for r in shards.fill("step", 2, _work(calls), total=8)] == list(range(8))
    damage(shards.path("step", 4, 6))
    capsys.readouterr()

    resumed, calls = Shards(tmp_path, fmt=fmt), []  # a rerun: a new process, nothing trusted yet
    rows = resumed.fill("step", 2, _work(calls), total=8)
    assert [r["i"] for r in rows] == list(range(8)) and resumed.covered("step") == 8
    # the damaged range and the one after it are made again (a step's shards are a prefix), the two before are not
    assert calls == [(4, 6), (6, 8)]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"discarded {shards.path('step', 4, 6)}: ") and said in lines[0]
    assert lines[0].endswith("; it and the 1 later shard(s) of step will be made again")

    again, calls = Shards(tmp_path, fmt=fmt), []
    assert len(again.fill("step", 2, _work(calls), total=8)) == 8 and calls == []  # whole now: nothing to say
    assert capsys.readouterr().err == ""


def test_a_shard_changed_in_place_or_without_its_record_is_checked_too(tmp_path, capsys):
    shards, calls = Shards(tmp_path, fmt="jsonl"), []
    shards.fill("step", 2, _work(calls), total=6)
    last = shards.path("step", 4, 6)
    last.write_text(last.read_text().replace("item 5", "item X"))  # an editor: same rows, other content
    old = shards.path("step", 2, 4)
    old.with_name(f".{old.name}.check").unlink()  # a shard from before shards carried a record

    calls = []
    rows = Shards(tmp_path, fmt="jsonl").fill("step", 2, _work(calls), total=6)
    assert calls == [(4, 6)] and [r["text"] for r in rows] == [f"item {i}" for i in range(6)]
    assert capsys.readouterr().err.strip() == f"discarded {last}: checksum mismatch; it will be made again"
    assert json.loads(old.with_name(f".{old.name}.check").read_text())["rows"] == 2  # trusted: it reads whole

    rundir.write_jsonl(shards.path("step", 6, 8), [{"i": 6}])
    cut = shards.path("step", 6, 8)
    cut.write_text(cut.read_text()[:-3])  # no record, and not whole either
    calls = []
    assert len(Shards(tmp_path, fmt="jsonl").fill("step", 2, _work(calls), total=8)) == 8 and calls == [(6, 8)]
    assert "not whole, and no record of it" in capsys.readouterr().err


def test_a_damaged_shard_whose_twin_holds_its_range_goes_alone(tmp_path, capsys):
    """A kill between writing a judged shard and dropping its sampled source leaves both: a damaged
    judged one is judged again from its source, and nothing after it is touched."""
    shards, calls = Shards(tmp_path), []
    shards.fill("samples", 2, _work(calls), total=6)
    shards.transform("samples", "judged", lambda rows, start: rows, keep_source=True)
    damaged = shards.path("judged", 2, 4)
    _cut_parquet(damaged)
    for stop in (2, 6):
        shards.path("samples", stop - 2, stop).unlink()

    resumed, judged = Shards(tmp_path), []
    assert resumed.covered("samples", "judged") == 6
    resumed.transform("samples", "judged", lambda rows, start: judged.append(start) or rows)
    assert judged == [2] and [r["i"] for r in resumed.read("judged")] == list(range(6))
    assert f"discarded {damaged}: " in capsys.readouterr().err
