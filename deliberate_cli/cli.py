"""`dacli`: parse, compose the config with Hydra, hand it to one stage, print a summary.

Nothing heavy is imported here, so `dacli --help` answers at once.
"""
import os
from pathlib import Path
from typing import List, Optional

import typer

from .errors import DacliError, Interrupted

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    help="Declarative deliberative-alignment experiments: generate → train → eval → report.\n\n"
    "Every command takes Hydra overrides (method=aft_cot data.n_samples=500), recipe=NAME for a whole "
    "experiment from recipes/, and -m/--multirun to sweep comma-separated values.",
)

_OVERRIDES = typer.Argument(None, help="Hydra overrides, e.g. method=aft_cot data.n_samples=500 recipe=quickstart",
                            show_default=False)
_MULTIRUN = typer.Option(False, "-m", "--multirun", help="Sweep: run every combination of comma-separated values.")
_VERBOSE = typer.Option(False, "-v", "--verbose",
                        help="Print the libraries' output (warnings, vLLM's lines, their progress bars) here "
                             "instead of into each stage's log (<run dir>/logs/STAGE.log).")


def _launch(command: str, overrides: Optional[List[str]], multirun: bool, verbose: bool) -> None:
    from .compose import launch
    from .pipeline import task
    from .progress import VERBOSE_ENV

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DacliError("dacli starts its own training processes: run it once, without accelerate launch or "
                         "torchrun, and set train.num_processes=N (and train.accelerate_config=fsdp or another "
                         "file under conf/accelerate/)")
    if verbose:  # the stage processes inherit it
        os.environ[VERBOSE_ENV] = "1"
    try:
        launch(command, overrides or [], multirun, task)
    except Interrupted as e:
        e.command = f"dacli {command}" + (" -m" if multirun else "")
        raise


@app.command()
def generate(overrides: Optional[List[str]] = _OVERRIDES, multirun: bool = _MULTIRUN,
             verbose: bool = _VERBOSE) -> None:
    """Write deliberative CoT data (and MSM documents for msm_* methods) with a spec-aware judge."""
    _launch("generate", overrides, multirun, verbose)


@app.command()
def train(overrides: Optional[List[str]] = _OVERRIDES, multirun: bool = _MULTIRUN,
          verbose: bool = _VERBOSE) -> None:
    """Run the method's stages (midtrain, sft) with TRL on the generated data."""
    _launch("train", overrides, multirun, verbose)


@app.command("eval")
def eval_(
    name: str = typer.Argument(..., help="The eval to run, e.g. am."),
    overrides: Optional[List[str]] = _OVERRIDES,
    multirun: bool = _MULTIRUN,
    verbose: bool = _VERBOSE,
) -> None:
    """Evaluate the trained checkpoint (or eval.checkpoint=base / a path) and score it with 95% intervals."""
    _launch("eval", [f"eval={name}", *(overrides or [])], multirun, verbose)


@app.command()
def run(overrides: Optional[List[str]] = _OVERRIDES, multirun: bool = _MULTIRUN,
        verbose: bool = _VERBOSE) -> None:
    """generate → train → eval → report, each stage in its own process; cached stages are skipped."""
    _launch("run", overrides, multirun, verbose)


@app.command()
def plan(overrides: Optional[List[str]] = _OVERRIDES, multirun: bool = _MULTIRUN,
         command: str = typer.Option("run", "--command", help="The command to plan: run, generate, train or eval."),
         prices: Optional[Path] = typer.Option(None, "--prices", show_default=False,
                                               help="A YAML price table ({model: {input: $, output: $}} per million "
                                                    "tokens) for the grader's cost; default: the config's `prices`.")
         ) -> None:
    """What `dacli run` (or another command) would compute and cost, without loading a model or writing
    anything: the jobs after sharing, trainings, evals, samples, tokens, GPU-hours and the grader's cost."""
    from rich.console import Console

    from .plan import make, show
    from .report import read_prices
    from .stages import COMMANDS

    if command not in COMMANDS:
        raise DacliError(f"--command must be one of {', '.join(COMMANDS)}, got '{command}'")
    show(make(command, list(overrides or []), multirun, read_prices(prices) if prices else None), Console())


@app.command()
def report(directory: Path = typer.Argument(..., help="A run dir or a sweep dir."),
           at: Optional[int] = typer.Option(None, "--at", min=1, show_default=False,
                                            help="The AFT sample count of the Fig. 4 bars (report_fig4.png); "
                                                 "default: the largest count every AFT method has."),
           prices: Optional[Path] = typer.Option(None, "--prices", show_default=False,
                                                 help="A YAML price table ({model: {input: $, output: $}} per "
                                                      "million tokens) for the cost line; default: the runs' "
                                                      "own `prices`.")) -> None:
    """Write report.md, report.json, am_rate.png and report_fig4.png for a run or a sweep, and print the table."""
    from .report import print_table, write

    result = write(directory, at, prices)
    print_table(directory)
    typer.echo(f"report: {result['path']}" + (f"  plot: {result['plot']}" if result["plot"] else "")
               + (f"  fig. 4: {result['fig4']}" if result.get("fig4") else ""))


@app.command()
def config(overrides: Optional[List[str]] = _OVERRIDES) -> None:
    """Print the composed config (after overrides and recipe) without running anything, after the checks
    that need no network: settings, the spec file, local model paths and prompt files."""
    from omegaconf import OmegaConf
    from rich.console import Console
    from rich.syntax import Syntax

    from .compose import load, split_recipe
    from .config import validate
    from .preflight import check

    recipe, rest = split_recipe(list(overrides or []))
    cfg = load(rest, recipe)
    validate(cfg)
    check(cfg)
    Console().print(Syntax(OmegaConf.to_yaml(cfg), "yaml", background_color="default"))


def _stop_on_signals() -> None:
    """SIGINT (Ctrl-C) and SIGTERM (`timeout`, `kill`, a scheduler's end of job) raise Interrupted
    wherever the main thread is: the code on the way out ends the running stage and everything it
    started (processes.run_in_group) and names what stopped. A second signal while that happens is
    ignored, so that the cleanup finishes; a signal ignored already (SIGINT in a job a script put in
    the background) stays ignored."""
    import signal

    raised = []

    def stop(signum, frame):
        if not raised:
            raised.append(signum)
            raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, stop)


def main() -> None:
    _stop_on_signals()
    try:
        app()
    except DacliError as e:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise SystemExit(2)
    except Interrupted as e:
        from rich.console import Console
        from rich.text import Text

        console = Console(stderr=True)
        if console.is_terminal:  # a killed stage's live display stopped mid-frame, its cursor hidden
            console.show_cursor(True)
            console.line()
        head, _, rest = str(e).partition(": ")
        console.print(Text.assemble((f"{head}:", "bold red"), " ", rest), highlight=False, soft_wrap=True)
        raise SystemExit(128 + e.signum)


if __name__ == "__main__":
    main()
