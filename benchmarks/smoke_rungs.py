"""Every CUDA rung alone, each in a process of its own, all at once: the step of
benchmarks/gpu_check.sh that comes before anything runs the rungs together.

Why: a rung that faults on its first GPU run leaves its process's CUDA context unusable, and one that
hangs holds its process until something kills it. Run inside pytest, a sanitizer run or the
benchmark, it would take every later result of that process with it. Here each rung runs
`sanitize_kernels.py --quick --float32 --only RUNG` on its own for at most --timeout seconds; the
rungs that fail or hang are written, comma-separated, to --out, and gpu_check.sh leaves them out of
its later steps (and says so in its summary). A rung the GPU does not have (wgmma before 9.0, the
tensor-core rungs on a T4) is refused by sanitize_kernels.py with the reason, which is not a failure.

    python benchmarks/smoke_rungs.py --out broken_rungs.txt --logs DIR

Prints one line per rung; each rung's output goes to DIR/smoke_<rung>.log. Exits 1 if a rung
failed. Where the kernels cannot run at all (no GPU, no CUDA build), it says why and exits 0 with
no rung named: that is the "kernels usable" step's finding, not one of a rung.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from minilora.kernels import cuda as cuda_kernels
from minilora.kernels import nf4

SANITIZE = Path(__file__).resolve().parent / "sanitize_kernels.py"


def run_alone(commands, timeout, logs):
    """{name: verdict} for {name: command}: every command started at once, each with its output in
    logs/smoke_<name>.log; "ok" for exit 0, "FAILED (exit N)", or "HUNG" for one still running
    `timeout` seconds after the start (killed then)."""
    started = time.monotonic()
    running = {}
    for name, command in commands.items():
        log = open(logs / f"smoke_{name}.log", "w")
        running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
    verdicts = {}
    for name, (process, log) in running.items():
        try:
            code = process.wait(timeout=max(0.0, timeout - (time.monotonic() - started)))
            verdicts[name] = "ok" if code == 0 else f"FAILED (exit {code})"
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            verdicts[name] = f"HUNG (killed after {timeout:.0f} s)"
        log.close()
    return verdicts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="file for the failed rungs' names")
    parser.add_argument("--logs", type=Path, default=Path("."), help="folder for smoke_<rung>.log")
    parser.add_argument("--timeout", type=float, default=25.0, help="seconds each rung may take")
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    usable, reason = cuda_kernels.status()
    if not usable:
        print(f"smoke_rungs: the CUDA kernels cannot run here: {reason}")
        args.out.write_text("")
        return 0

    rungs = cuda_kernels.VARIANTS + (nf4.VARIANT,)
    verdicts = run_alone({rung: [sys.executable, str(SANITIZE), "--quick", "--float32", "--only", rung]
                          for rung in rungs}, args.timeout, args.logs)
    for rung, verdict in verdicts.items():
        print(f"{rung:>10}: {verdict}  ({args.logs / f'smoke_{rung}.log'})", flush=True)
    broken = [rung for rung, verdict in verdicts.items() if verdict != "ok"]
    args.out.write_text(",".join(broken))
    print(f"smoke_rungs: {len(rungs) - len(broken)} of {len(rungs)} rungs ran alone without a failure")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
