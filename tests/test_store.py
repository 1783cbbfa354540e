"""store.Entry: the one routine every stage output goes through (lock, freshness, partial dir and
resume stamp, manifest, rename, link), exercised on its own with small builds."""
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from deliberate_cli import rundir
from deliberate_cli.errors import DacliError
from deliberate_cli.shards import Shards
from deliberate_cli.store import RESUME, Entry


def _build(calls, text="whole"):
    def build(work):
        calls.append(work)
        (work / "out.txt").write_text(text)
        return {"counts": {"rows": 3}, "generator": "g"}
    return build


def test_an_entry_is_built_once_then_reused_until_its_key_or_inputs_change(tmp_path):
    calls = []
    entry = Entry(tmp_path / "aft-1", "generate_aft", {"model": "m", "seed": 0}, {"data": {"sha": "a"}})
    first = entry.materialise(_build(calls))
    assert not first.cached and len(calls) == 1 and calls[0].name == "aft-1.partial"
    assert (tmp_path / "aft-1" / "out.txt").read_text() == "whole" and not (tmp_path / "aft-1.partial").exists()
    m = rundir.read_manifest(tmp_path / "aft-1")
    assert m["counts"] == {"rows": 3} and m["generator"] == "g" and m["config"] == {"model": "m", "seed": 0}
    assert m["config_hash"] == rundir.config_hash({"model": "m", "seed": 0}) and m["inputs"] == {"data": {"sha": "a"}}
    assert not (tmp_path / "aft-1" / RESUME).exists()

    again = Entry(tmp_path / "aft-1", "generate_aft", {"model": "m", "seed": 0}, {"data": {"sha": "a"}}).materialise(_build(calls))
    assert again.cached and len(calls) == 1 and again.manifest == m

    Entry(tmp_path / "aft-1", "generate_aft", {"model": "m", "seed": 1}, {"data": {"sha": "a"}}).materialise(_build(calls))
    Entry(tmp_path / "aft-1", "generate_aft", {"model": "m", "seed": 1}, {"data": {"sha": "b"}}).materialise(_build(calls))
    assert len(calls) == 3


def test_a_killed_build_resumes_from_its_partial_dir_only_with_the_same_stamp(tmp_path):
    out = tmp_path / "eval" / "am"

    def killed(work):
        (work / "shards").mkdir()
        (work / "shards" / "gen-00000.jsonl").write_text("{}\n")
        raise KeyboardInterrupt  # the build dies mid-way, as a SIGKILL would leave it

    with pytest.raises(KeyboardInterrupt):
        Entry(out, "eval_am", {"k": 1}, resume={"gen": 1}).materialise(killed)
    seen = []

    def resumed(work):
        seen.append(sorted(p.name for p in (work / "shards").glob("*")))
        return {"counts": {}}

    Entry(out, "eval_am", {"k": 2}, resume={"gen": 1}).materialise(resumed)  # another grader, same generation
    assert seen == [["gen-00000.jsonl"]]
    assert not (out / "shards").exists() and not (out / RESUME).exists()  # shards go once the entry is in place

    with pytest.raises(KeyboardInterrupt):
        Entry(out, "eval_am", {"k": 3}, resume={"gen": 1}).materialise(killed)
    Entry(out, "eval_am", {"k": 3}, resume={"gen": 2}).materialise(resumed)  # other samples: start over
    assert seen[-1] == []


def test_an_entry_that_keeps_its_shards_hands_them_to_a_rebuild_with_the_same_stamp(tmp_path):
    out, seen = tmp_path / "eval" / "am", []

    def build(work):
        shards = work / "shards"
        seen.append(sorted(p.name for p in shards.glob("*")) if shards.is_dir() else [])
        shards.mkdir(exist_ok=True)
        (shards / "gen-00000000-00000002.jsonl").write_text("{}\n")
        return {"counts": {}}

    Entry(out, "eval_am", {"grader": "a"}, resume={"gen": 1}, keep_shards=True).materialise(build)
    assert (out / "shards" / "gen-00000000-00000002.jsonl").is_file()  # kept with the finished entry
    Entry(out, "eval_am", {"grader": "b"}, resume={"gen": 1}, keep_shards=True).materialise(build)  # another grader
    Entry(out, "eval_am", {"grader": "b", "n": 3}, resume={"gen": 2}, keep_shards=True).materialise(build)  # other samples
    assert seen == [[], ["gen-00000000-00000002.jsonl"], []]


def test_an_extendable_entry_is_extended_in_place_while_it_does_not_cover_the_request(tmp_path):
    made = []

    def build(n):
        def extend(work):
            made.append(n)
            (work / "rows.txt").write_text("x" * n)
            return {"counts": {"prompts": n}}
        return extend

    def entry(n):
        return Entry(tmp_path / "aft-1", "generate_aft", {"k": 1}, covers=lambda m: m["counts"]["prompts"] >= n)

    entry(4).materialise(build(4))
    assert entry(2).materialise(build(2)).cached and entry(4).materialise(build(4)).cached
    assert not entry(8).materialise(build(8)).cached and made == [4, 8]
    assert (tmp_path / "aft-1" / "rows.txt").read_text() == "x" * 8 and not (tmp_path / "aft-1.partial").exists()
    with pytest.raises(DacliError, match="another config"):
        Entry(tmp_path / "aft-1", "generate_aft", {"k": 2}, covers=lambda m: False).materialise(build(1))


def test_the_run_dir_links_to_the_entry(tmp_path):
    cfg = OmegaConf.create({"run": {"dir": str(tmp_path / "runs" / "r1")}})
    store = tmp_path / "runs" / "store"
    built = Entry(store / "msm-1", "generate_msm", {"k": 1}).materialise(_build([]), link=(cfg, "data/msm"))
    link = tmp_path / "runs" / "r1" / "data" / "msm"
    assert link.is_symlink() and link.resolve() == built.dir.resolve() and (link / "out.txt").read_text() == "whole"
    Entry(store / "msm-2", "generate_msm", {"k": 2}).materialise(_build([], "other"), link=(cfg, "data/msm"))
    assert (link / "out.txt").read_text() == "other"  # moved atomically to the new entry


def test_a_process_waiting_on_a_lock_says_who_holds_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from deliberate_cli.store import locked\n"
        f"with locked(r'{tmp_path / 'aft-1'}'):\n    print('held', flush=True); time.sleep(3)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    waiter = subprocess.run([sys.executable, "-c", (
        "from deliberate_cli.store import locked\n"
        f"with locked(r'{tmp_path / 'aft-1'}'):\n    print('got it')")], capture_output=True, text=True, timeout=60)
    holder.wait()
    assert "got it" in waiter.stdout
    assert f"waiting for {tmp_path / 'aft-1'} held by pid {holder.pid} since" in waiter.stderr + waiter.stdout


def _sharded(calls, n):
    """A build that works in shards as the stages do, and merges them into its data file."""
    def build(work):
        def work_on(start, stop):
            calls.append((start, stop))
            return [{"i": i} for i in range(start, stop)]
        rows = Shards(work / "shards").fill("step", 2, work_on, total=n)
        rundir.write_parquet(work / "data.parquet", rows)
        return {"counts": {"rows": len(rows)}}
    return build


def _half(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def test_a_damaged_entry_is_rebuilt_from_its_shards_with_one_line(tmp_path, capsys):
    """A manifest cut in half, or a data file that no longer matches the manifest's record of it: an
    entry with shards (extendable, built in place; an eval, which keeps them) is rebuilt from them."""
    def extendable():
        return Entry(tmp_path / "aft-1", "generate_aft", {"k": 1}, covers=lambda m: m["counts"]["rows"] >= 6)

    def eval_entry():
        return Entry(tmp_path / "eval" / "am", "eval_am", {"k": 1}, resume={"gen": 1}, keep_shards=True)

    for entry, in_place in ((extendable, True), (eval_entry, False)):
        calls = []
        built = entry().materialise(_sharded(calls, 6))
        assert built.manifest["files"]["data.parquet"]["rows"] == 6 and calls == [(0, 2), (2, 4), (4, 6)]
        manifest, data = built.dir / rundir.MANIFEST, built.dir / "data.parquet"
        capsys.readouterr()

        _half(manifest)
        again = entry().materialise(_sharded(calls, 6))
        assert not again.cached and again.manifest["counts"]["rows"] == 6 and len(calls) == 3  # nothing made again
        assert capsys.readouterr().err.strip() == f"{manifest} is damaged (not valid JSON): rebuilding {built.dir} from its shards"

        _half(data)
        shard = built.dir / "shards" / "step-00000004-00000006.parquet"
        size = shard.stat().st_size
        _half(shard)
        again = entry().materialise(_sharded(calls, 6))
        assert again.manifest["counts"]["rows"] == len(rundir.read_parquet(data)) == 6 and calls[3:] == [(4, 6)]
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[0].startswith(f"{data} does not match {manifest} (") and "not a whole parquet file" in lines[0]
        assert lines[0].endswith(f": rebuilding {built.dir} from its shards") and len(lines) == 2
        work = built.dir if in_place else built.dir.with_name("am.partial")  # where the rebuild takes the shards
        assert lines[1] == (f"discarded {work / 'shards' / shard.name}: {size // 2} of {size} bytes, not a whole "
                            "parquet file; it will be made again")
        assert entry().materialise(_sharded(calls, 6)).cached and len(calls) == 4  # whole again


def test_a_damaged_entry_without_shards_is_refused_with_one_line(tmp_path):
    calls = []

    def entry():
        return Entry(tmp_path / "msm-1", "generate_msm", {"k": 1})

    built = entry().materialise(_sharded(calls, 4))
    assert not (built.dir / "shards").exists()  # gone once the entry is in place: nothing to rebuild from
    data, manifest = built.dir / "data.parquet", built.dir / rundir.MANIFEST
    whole = data.read_bytes()
    _half(data)
    with pytest.raises(DacliError) as e:
        entry().materialise(_sharded(calls, 4))
    assert str(e.value).startswith(f"{data} does not match {manifest} (") and str(e.value).endswith(
        f"; delete {built.dir} to build it again")
    data.write_bytes(whole)
    assert entry().materialise(_sharded(calls, 4)).cached

    _half(manifest)
    with pytest.raises(DacliError, match=f"^{manifest} is damaged \\(not valid JSON\\); delete {built.dir} to build"):
        entry().materialise(_sharded(calls, 4))
    assert len(calls) == 2 and not (built.dir / rundir.MANIFEST).read_text().endswith("}\n")  # left as it was

    old = rundir.read_manifest(Entry(tmp_path / "msm-2", "generate_msm", {"k": 2}).materialise(_sharded(calls, 2)).dir)
    del old["files"]  # written before manifests recorded their files: trusted as it is
    rundir.write_json(tmp_path / "msm-2" / rundir.MANIFEST, old)
    _half(tmp_path / "msm-2" / "data.parquet")
    assert Entry(tmp_path / "msm-2", "generate_msm", {"k": 2}).materialise(_sharded(calls, 2)).cached
