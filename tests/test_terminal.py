"""What a researcher's terminal shows: each stage's progress and summary, one line per error; the
libraries' warnings, INFO lines and bars go to the stage's log (all of it with -v)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import dacli, tiny_overrides

# Lines only a library writes: Python warnings, logging records, tqdm bars, transformers' INFO lines.
LIBRARY = re.compile(r"Warning|WARNING|\bINFO\b|\[transformers\]|\d+%\||it/s\]|examples/s\]|\{'loss'")


def _library_lines(text: str) -> list:
    return [line for line in text.splitlines() if LIBRARY.search(line)]


@pytest.fixture(scope="module")
def generated(tiny_model, tmp_path_factory):
    """(overrides, run dir, work dir, the generate run) of one tiny run whose libraries report what they load."""
    work = tmp_path_factory.mktemp("terminal")
    args = tiny_overrides(tiny_model, work / "runs", "method=aft_nocot", "data.n_samples=4")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFORMERS_VERBOSITY", "info")  # transformers then logs every file it loads
        return args, work / "runs" / "tiny-aft_nocot-4ex", work, dacli("generate", *args, cwd=work)


def test_stages_print_progress_and_summary_and_log_the_libraries(generated):
    args, run, work, generate = generated
    train = dacli("train", *args, cwd=work)
    for proc, stage, track in ((generate, "generate", "prompts sampled: 4/4"), (train, "train", "sft steps: ")):
        terminal = proc.stdout + proc.stderr
        assert not _library_lines(terminal), terminal
        assert f"{stage}  log: runs/tiny-aft_nocot-4ex/logs/{stage}.log" in proc.stderr
        assert track in proc.stderr and f"dacli {stage}: tiny-aft_nocot-4ex" in proc.stdout
    assert re.search(r"sft steps: (\d+)/\1 loss=\d", train.stderr), train.stderr
    generate_log = (run / "logs" / "generate.log").read_text()
    train_log = (run / "logs" / "train.log").read_text()
    assert "[transformers] loading configuration file" in generate_log and "prompts sampled: 4/4" in generate_log
    assert "Tokenizing train dataset" in train_log and "{'loss'" in train_log


@pytest.mark.slow  # 8 s of a stage; where its output goes without -v is tested above
def test_verbose_prints_the_libraries_and_writes_no_log(generated):
    args, run, work, _ = generated
    log = run / "logs" / "train.log"
    before = log.read_text() if log.is_file() else ""
    proc = dacli("train", "-v", *args, "train.learning_rate=1e-3", cwd=work)  # another checkpoint: it trains
    assert "Tokenizing train dataset" in proc.stderr and "100%|" in proc.stderr  # datasets' and the Trainer's bars
    assert re.search(r"sft steps: (\d+)/\1 loss=\d", proc.stderr) and "dacli train: tiny-aft_nocot-4ex" in proc.stdout
    assert (log.read_text() if log.is_file() else "") == before


def test_a_mistake_is_one_error_line_and_a_crash_one_line_with_its_traceback_in_the_log(tiny_model, tmp_path):
    proc = dacli("train", *tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot"), cwd=tmp_path,
                 check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0] in (tmp_path / "runs" / "tiny-aft_nocot-8ex" / "logs" / "train.log").read_text()

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "config.json").write_text("{")
    proc = dacli("generate", *tiny_overrides(broken, tmp_path / "crash", "method=aft_nocot"), cwd=tmp_path,
                 check=False)
    crashed = [line for line in proc.stderr.splitlines() if line.startswith("stage generate crashed: ")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(crashed) == 1 and crashed[0].endswith("(traceback in crash/tiny-aft_nocot-8ex/logs/generate.log)")
    assert "Traceback" in (tmp_path / "crash" / "tiny-aft_nocot-8ex" / "logs" / "generate.log").read_text()


def test_redirect_sends_c_level_output_to_the_log_and_dacli_lines_to_the_terminal(tmp_path):
    log = tmp_path / "logs" / "stage.log"
    code = ("import os, sys, warnings; from pathlib import Path; from deliberate_cli import progress; "
            f"progress.redirect(Path({str(log)!r})); os.write(1, b'C stdout\\n'); os.write(2, b'C stderr\\n'); "
            "print('python print'); warnings.warn('a library FutureWarning', FutureWarning); "
            "os.system('echo from a subprocess'); progress.console().print('dacli line')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "dacli line\n", proc
    text = log.read_text()
    for line in ("C stdout", "C stderr", "python print", "FutureWarning", "from a subprocess"):
        assert line in text
    assert "dacli line" not in text


def test_track_off_a_terminal_prints_one_line_when_an_outer_track_ends(capsys):
    from deliberate_cli import progress

    with progress.track("documents", 3, unit="docs") as advance:
        for i in range(3):
            with progress.track("batch") as inner:
                inner(2)
            advance(kept=i + 1, tokens=100 * (i + 1))
    with progress.track("requests") as advance:
        advance(5)
    assert capsys.readouterr().err.splitlines() == ["  documents: 3/3 kept=3 tokens=300 (0s)", "  requests: 5 (0s)"]
