"""Start-up cost of `dacli --help` and `dacli <cmd> --help` against a bare `python -c pass`.

Run: `.venv/bin/python benchmarks/cli_startup.py [repeats]`. Target: every row <= 0.5 s on a 2-core CPU,
and no heavy package (torch, transformers, trl, datasets, vllm) imported by the CLI module.
"""
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "trl", "datasets", "vllm")


def timed(cmd, repeats):
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    base = timed([sys.executable, "-c", "pass"], repeats)
    rows = [("python -c pass (baseline)", base)]
    for args in (["--help"], ["generate", "--help"], ["train", "--help"], ["eval", "--help"], ["run", "--help"]):
        rows.append((f"dacli {' '.join(args)}", timed([sys.executable, "-m", "deliberate_cli", *args], repeats)))
    probe = "import sys, deliberate_cli.cli; print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    print(f"{'command':32} {'median s':>9} {'x baseline':>11}")
    for name, sec in rows:
        print(f"{name:32} {sec:9.3f} {sec / base:11.1f}")
    print(f"heavy modules imported by deliberate_cli.cli: {heavy or 'none'}")


if __name__ == "__main__":
    main()
