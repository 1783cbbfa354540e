"""The one exception type for mistakes a user can make; the CLI prints it as one line and exits 2."""


class DacliError(Exception):
    """Bad input, missing files, unknown options: anything the user can fix without reading code."""


class GaveUp(DacliError):
    """A model endpoint kept failing (rate limits, server errors, timeouts) for longer than its engine's
    retry_budget. What was answered is kept; the same command goes on from there."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached dacli (cli.py raises it from the signal handler). A BaseException, as
    KeyboardInterrupt is, so that nothing on the way out (Hydra's job runner, a sweep's failed-job
    bookkeeping, an `except Exception`) takes it for a failed job; what knows the command, the stage and
    the run dir fills them in as it passes, and the CLI prints it as one line."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.command: str = ""
        self.stage: str = ""
        self.run: str = ""

    def __str__(self) -> str:
        import signal

        where = ", ".join(filter(None, [self.command, self.stage and f"stage {self.stage}",
                                        self.run and f"run dir {self.run}"]))
        return (f"interrupted ({signal.Signals(self.signum).name}): {where or 'dacli'}; everything it started "
                f"is stopped, and rerunning the same command resumes from what was finished")
