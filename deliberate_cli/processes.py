"""Child processes that never outlive their parent: every stage, launcher and rank starts through
`die_with_parent`, so a killed dacli leaves nothing generating or training on in the background."""
import os


def die_with_parent() -> None:
    """Run in a child before it starts: Linux sends it SIGKILL when its parent dies (prctl
    PR_SET_PDEATHSIG), so a killed dacli, stage or launcher leaves nothing running on in the background."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the prctl
        os._exit(1)
