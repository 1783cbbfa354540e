"""dacli's own terminal output: one live progress display per stage, whatever the libraries print.

vLLM, Triton, transformers and datasets write warnings, INFO lines and tqdm bars to stdout and
stderr, from Python and from C. So a stage child sends fds 1 and 2 to its log (`redirect`, called
by pipeline.py before anything heavy is imported) and keeps a duplicate of the terminal's stderr;
`console()` writes there. Then a stage's terminal shows its tracks (`track`), its one-line errors
and nothing else, while the log keeps everything, the libraries' output included.
"""
import atexit
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

VERBOSE_ENV = "DACLI_VERBOSE"  # "1" (`dacli -v`): stages print everything to the terminal, as the libraries do
_tty_fd: Optional[int] = None  # the terminal's stderr, kept aside once fds 1 and 2 go to the log
_log: Optional[Path] = None
_console = None
_live = None  # the stage's rich Progress, started by its first track on a terminal
_open = 0  # tracks open now: a track opened inside another is transient


def redirect(log: Path) -> None:
    """Send fds 1 and 2 (so Python's and C's output alike) to `log`, appending, and keep the
    terminal's stderr for `console()`."""
    global _tty_fd, _log
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)} (pid {os.getpid()})\n".encode())
    sys.stdout.flush()
    sys.stderr.flush()
    _tty_fd = os.dup(2)  # not inheritable: the stage's own subprocesses never see the terminal
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)  # keeps Python's lines in order with C's in the log
    _log = log


def log_path() -> Optional[Path]:
    """The stage's log, when its output is redirected there (None with -v and outside a stage)."""
    return _log


def console():
    """The rich Console for dacli's own terminal output: the kept terminal fd in a redirected stage,
    stderr elsewhere."""
    global _console
    if _console is None:
        from rich.console import Console

        if _tty_fd is None:
            _console = Console(stderr=True)
        else:
            stream = os.fdopen(_tty_fd, "w", buffering=1, closefd=False)
            _console = Console(file=stream, width=_width(_tty_fd))
    return _console


def _width(fd: int) -> Optional[int]:
    """rich sizes itself from fds 0-2, which are the log in a redirected stage: ask the terminal
    (a pseudo-terminal may answer 0: then rich's default)."""
    try:
        return os.get_terminal_size(fd).columns or None
    except OSError:
        return None


def _fields(fields: Dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _count(count: int, total: Optional[int]) -> str:
    return f"{count}/{total}" if total is not None else str(count)


@contextlib.contextmanager
def track(label: str, total: Optional[int] = None, unit: str = "") -> Iterator[Callable[..., None]]:
    """Count work done under `label`; yields `advance(n=1, **fields)`, where fields are latest values
    (kept=3, not +3) shown after the count. On a terminal every track of a stage is one line of the
    stage's one live display; a track opened inside another (a batch within a shard) leaves it when
    done. Elsewhere (CI, pytest, a pipe) an outer track prints one line when it ends, and in a
    redirected stage that line goes to the log as well."""
    global _open
    count, shown = 0, {}
    nested, started = _open > 0, time.time()
    live = _display() if console().is_terminal else None
    task = live.add_task(label, total=total, unit=unit, shown="") if live else None

    def advance(n: int = 1, **fields: Any) -> None:
        nonlocal count
        count += n
        shown.update(fields)
        if live:
            live.update(task, advance=n, shown=_fields(shown))

    _open += 1
    try:
        yield advance
    finally:
        _open -= 1
        if live and nested:
            live.remove_task(task)
        elif live:
            live.stop_task(task)  # its elapsed time stops with it
        if not nested:
            line = " ".join(filter(None, [f"  {label}: {_count(count, total)}", _fields(shown),
                                          f"({time.time() - started:.0f}s)"]))
            if not live:
                console().print(line, highlight=False, markup=False, soft_wrap=True)
            if _log is not None:
                print(line, file=sys.stderr, flush=True)


def finish() -> None:
    """Stop the stage's live display, its last frame left on the terminal (again at exit: harmless)."""
    if _live is not None:
        _live.stop()


def _display():
    """The stage's rich Progress, started at its first track and stopped when the process ends."""
    global _live
    if _live is None:
        from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        class Bar(BarColumn):
            def render(self, task):  # no pulsing bar for a count without a total
                return super().render(task) if task.total is not None else Text("")

        class Count(ProgressColumn):
            def render(self, task):
                total = int(task.total) if task.total is not None else None
                unit = f" {task.fields['unit']}" if task.fields["unit"] else ""
                return Text(_count(int(task.completed), total) + unit)

        _live = Progress(TextColumn("{task.description}", markup=False), Bar(), Count(),
                         TextColumn("{task.fields[shown]}", markup=False), TimeElapsedColumn(), console=console(),
                         # Live would otherwise route sys.stdout/stderr (the log, in a stage) to the terminal.
                         redirect_stdout=_log is None, redirect_stderr=_log is None)
        _live.start()
        atexit.register(finish)
    return _live
