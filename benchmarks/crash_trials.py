"""Crash trials: kill a tiny deterministic CPU training run at random moments, resume it, and check that
it ends exactly where an uninterrupted run ends (weights, optimiser state and loss history, bitwise).

    python benchmarks/crash_trials.py --trials 21                 # SIGKILL, SIGINT and SIGTERM in turn
    python benchmarks/crash_trials.py --trials 20 --signal kill   # SIGKILL only (or int, term)

Each trial trains `unetkit train` on `synthetic:cells` in a fresh run directory and sends the signal at a
time drawn uniformly over the length of an uninterrupted run (data set-up, epochs, validation and
checkpoint saves alike), then resumes with `unetkit train --resume RUN` (or starts over when the run was
killed before writing its config); a resumed attempt is itself killed again with probability 1/2, up to
`--max-kills` times. SIGINT and SIGTERM ask the run to save at the next step (exit status 130 / 143); one
that lands before the handlers are installed (while the data loads) ends the process at once, and a SIGTERM
then leaves the run directory's lock behind, which the resumed run must take over. What the signal left on
disk is recorded: the epoch (and step) `last/` held, and whether a save was cut short (`.last.old` or
temporary files present).

Runs are forked from this process, which has imported torch and unetkit but computed nothing (forking
after OpenMP work is unsafe), so a run starts in milliseconds instead of paying Python's import time.
Writes `--out` (JSON) and the same name with `.md`; exits 1 when any trial ends with other weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = {  # BatchNorm statistics; DropBlock's random masks
    "unet": ["-m", "base_channels=4", "-m", "depth=2"],
    "sa_unet": ["-m", "base_channels=4", "-m", "block_size=3", "-m", "keep_prob=0.8"],
}
RUN_FLAGS = [
    "--data", "synthetic:cells", "--deterministic", "--patch-size", "32", "--batch-size", "4",
    "--set", "synthetic_train=6", "--set", "synthetic_val=2", "--set", "synthetic_size=48",
    "--set", "steps_per_epoch=4", "--set", "samples=1", "--set", "threads=1", "--lr", "0.003",
]  # fmt: skip
SIGNALS = {"kill": signal.SIGKILL, "int": signal.SIGINT, "term": signal.SIGTERM}
# the exit statuses a run may end with after each signal: saved and stopped, ended at once, or finished first
EXPECTED_EXITS = {"kill": (-9, 0), "int": (130, 0), "term": (143, -15, 0)}


def _preload() -> None:
    """Import what a run imports, without computing anything, so forked runs start at once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import safetensors.torch  # noqa: F401
    import torch._inductor  # noqa: F401  (imported by torch.use_deterministic_algorithms)
    import torchmetrics  # noqa: F401
    import tqdm.auto  # noqa: F401

    import unetkit.cli.main
    import unetkit.data.synthetic
    import unetkit.train.engine  # noqa: F401


def _fork_run(argv: list[str], log: Path) -> int:
    """Start `unetkit ARGV` in a forked child writing to `log`; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 99
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        from unetkit.cli.main import main

        code = main(argv)
    except KeyboardInterrupt:  # Ctrl-C before `main` took over
        code = 130
    except SystemExit as exit:  # a stop `main` did not turn into a status
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def _saves_started(run: Path, seen: set[str]) -> int:
    """How many checkpoint saves have begun so far: the temporary folders of `best/` and `last/` seen."""
    try:
        with os.scandir(run) as entries:
            seen.update(e.name for e in entries if e.name.startswith((".last.tmp", ".best.tmp")))
    except OSError:
        pass
    return len(seen)


def run_once(
    argv: list[str], log: Path, *, after: float | None = None, at_save: int | None = None, sig: int = signal.SIGKILL
) -> dict[str, Any]:
    """Run `unetkit ARGV`; send `sig` `after` seconds in, or as its `at_save`-th checkpoint save begins
    (if it still runs then)."""
    start = time.monotonic()
    run = Path(argv[argv.index("--out") + 1] if "--out" in argv else argv[argv.index("--resume") + 1])
    pid = _fork_run(argv, log)
    seen: set[str] = set()
    sent = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        saves = _saves_started(run, seen)  # watched in every run: the reference's count bounds `at_save`
        due = (after is not None and time.monotonic() >= start + after) or (at_save is not None and saves >= at_save)
        if due and not sent:
            os.kill(pid, sig)
            sent = True
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.001)
    _saves_started(run, seen)
    seconds = round(time.monotonic() - start, 3)
    return {"exit": os.waitstatus_to_exitcode(status), "signal_sent": sent, "seconds": seconds, "saves": len(seen)}


def on_disk(run: Path) -> dict[str, Any]:
    """What a killed run left: the epoch / step of `last/`, and traces of a save cut short."""
    found: dict[str, Any] = {"config_yaml": (run / "config.yaml").is_file(), "last_epoch": None}
    try:
        saved = json.loads((run / "last" / "config.json").read_text())
        found["last_epoch"] = saved.get("epoch")
        found["last_step"] = saved.get("step")
    except (OSError, ValueError):
        pass
    leftovers = sorted(p.name for p in run.glob(".*")) if run.is_dir() else []
    found["save_cut"] = bool(leftovers)
    found["leftovers"] = leftovers
    found["lock_left"] = (run / "train.lock").is_file()  # a process ended at once: the next run takes it over
    return found


def final_state(run: Path) -> dict[str, Any]:
    """Bitwise fingerprints of a finished run: weights, optimiser / scheduler state, loss history."""
    import torch

    state = torch.load(run / "last" / "state.pt", map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for group in state["optimizer"]["state"].values():
        for key in sorted(group):
            value = group[key]
            digest.update(value.numpy().tobytes() if isinstance(value, torch.Tensor) else repr(value).encode())
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in state["history"]]
    return {
        "weights_sha256": hashlib.sha256((run / "last" / "model.safetensors").read_bytes()).hexdigest(),
        "optimizer_sha256": digest.hexdigest(),
        "scheduler": repr(state["scheduler"]),
        "history": json.dumps(history, sort_keys=True),
        "epoch": state["epoch"],
    }


def trial(
    index: int,
    model: str,
    sig_name: str,
    workdir: Path,
    reference: dict[str, Any],
    rng: random.Random,
    max_kills: int,
    save_share: float,
) -> dict[str, Any]:
    run = workdir / f"trial{index:03d}"
    log = workdir / f"trial{index:03d}.log"
    fresh = ["train", *RUN_FLAGS, *MODELS[model], "--epochs", str(reference["epochs"]), "--out", str(run)]
    attempts: list[dict[str, Any]] = []
    kills = 0
    while True:
        if attempts and kills == 0:  # the first run ended before its signal came: start the trial again
            shutil.rmtree(run, ignore_errors=True)
        argv = ["train", "--resume", str(run)] if (run / "config.yaml").is_file() else fresh
        kill = kills < max_kills and (kills == 0 or rng.random() < 0.5)
        after = at_save = None
        if kill and sig_name == "kill" and rng.random() < save_share:  # aim at a checkpoint save
            at_save = rng.randint(1, reference["saves"])  # best/ (when it improved) and last/ each epoch
        elif kill:
            after = rng.uniform(0.0, reference["seconds"])
        result = run_once(argv, log, after=after, at_save=at_save, sig=SIGNALS[sig_name])
        moment = None if not kill else (f"save {at_save}" if at_save is not None else f"{after:.2f} s")
        result.update({"resume": argv is not fresh, "signal_at": moment})
        if result["signal_sent"]:
            kills += 1
            result["left"] = on_disk(run)
            attempts.append(result)
            if result["exit"] not in EXPECTED_EXITS[sig_name]:
                raise RuntimeError(f"trial {index}: SIG{sig_name.upper()} gave exit status {result['exit']}, see {log}")
            if result["exit"] == 0:
                break  # the signal came as the run finished
            continue
        attempts.append(result)
        if result["exit"] != 0:
            raise RuntimeError(f"trial {index}: run exited with {result['exit']}, see {log}")
        if kills or len(attempts) > 5:
            break
    return {"trial": index, "model": model, "signal": sig_name, "kills": kills, "attempts": attempts, "run": str(run)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--signal", choices=("kill", "int", "term", "mixed"), default="mixed")
    parser.add_argument("--models", default="unet,sa_unet", help="comma-separated, used in turn")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-kills", type=int, default=3, help="kills per trial at most")
    parser.add_argument(
        "--save-share", type=float, default=0.5, help="share of SIGKILLs sent as a checkpoint save begins"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where runs go (default: a temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "crash-trials.json"))
    args = parser.parse_args(argv)
    import tempfile

    _preload()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="unetkit-crash-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    models = args.models.split(",")
    reference: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}  # per model: epochs, seconds and checkpoint saves of a whole run
    started = time.monotonic()
    for model in models:  # uninterrupted runs: the weights to reach, and how long a run takes
        run = workdir / f"reference-{model}"
        argv_ref = ["train", *RUN_FLAGS, *MODELS[model], "--epochs", str(args.epochs), "--out", str(run)]
        result = run_once(argv_ref, workdir / f"reference-{model}.log")
        if result["exit"] != 0:
            raise RuntimeError(f"reference run failed, see {workdir}/reference-{model}.log")
        reference[model] = final_state(run)
        runs[model] = {"epochs": args.epochs, "seconds": result["seconds"], "saves": result["saves"]}
    trials = []
    for i in range(args.trials):
        model = models[i % len(models)]
        sig_name = args.signal if args.signal != "mixed" else ("kill", "int", "term")[i % 3]
        record = trial(i, model, sig_name, workdir, runs[model], rng, args.max_kills, args.save_share)
        got = final_state(Path(record["run"]))
        record["identical"] = {key: got[key] == reference[model][key] for key in got}
        record["same"] = all(record["identical"].values())
        trials.append(record)
        print(
            f"trial {i:3d} {model:8s} SIG{sig_name.upper():4s} signals {record['kills']} "
            f"{'same' if record['same'] else 'DIFFERENT'}: {_describe(record)}",
            flush=True,
        )
    kills = [a for t in trials for a in t["attempts"] if "left" in a]
    summary = {
        "trials": len(trials),
        "all_same": all(t["same"] for t in trials),
        "signals_sent": len(kills),
        "by_signal": {
            s: sum(1 for t in trials for a in t["attempts"] if "left" in a and t["signal"] == s) for s in SIGNALS
        },
        "before_first_checkpoint": sum(1 for a in kills if a["left"]["last_epoch"] is None),
        "saves_cut": sum(1 for a in kills if a["left"]["save_cut"]),
        "mid_epoch_saves": sum(1 for a in kills if a["left"].get("last_step") is not None),
        "locks_left": sum(1 for a in kills if a["left"].get("lock_left")),
        "reference_runs": runs,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    import torch

    report = {
        "command": "python benchmarks/crash_trials.py " + _shown_args(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "config": {
            "flags": RUN_FLAGS,
            "models": {m: MODELS[m] for m in models},
            "epochs": args.epochs,
            "signal": args.signal,
            "max_kills": args.max_kills,
            "seed": args.seed,
        },
        "summary": summary,
        "trials": trials,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(report))
    print(json.dumps(summary, indent=2))
    return 0 if summary["all_same"] else 1


def _shown_args(args: list[str]) -> str:
    """The arguments that decide the trials (not where their files went)."""
    shown, skip = [], False
    for arg in args:
        if skip or arg in ("--workdir", "--out"):
            skip = not skip
            continue
        shown.append(arg)
    return " ".join(shown)


def _describe(record: dict[str, Any]) -> str:
    """`at 1.23 s: last/ at epoch 2 (save cut); ...`: where each signal of a trial struck."""
    cells = []
    for a in record["attempts"]:
        if "left" not in a:
            cells.append("finished" if a["signal_at"] is None else f"finished before {a['signal_at']}")
            continue
        left = a["left"]
        where = "nothing saved" if left["last_epoch"] is None else f"last/ epoch {left['last_epoch']}"
        if left.get("last_step") is not None:
            where += f" step {left['last_step']}"
        cells.append(f"at {a['signal_at']}: {where}" + (" (save cut)" if left["save_cut"] else ""))
    return "; ".join(cells)


def _markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        "# Crash trials",
        "",
        f"`{report['command']}` — torch {report['versions']['torch']}, {report['machine']['cores']} cores.",
        "",
        f"- trials: {s['trials']}, signals sent: {s['signals_sent']} (SIGKILL {s['by_signal']['kill']}, "
        f"SIGINT {s['by_signal']['int']}, SIGTERM {s['by_signal']['term']})",
        f"- signals before the first checkpoint: {s['before_first_checkpoint']}; saves cut short: {s['saves_cut']}; "
        f"saves mid-epoch (SIGINT / SIGTERM): {s['mid_epoch_saves']}; run-directory locks left behind (and taken "
        f"over by the resumed run): {s['locks_left']}",
        f"- every trial ended with the uninterrupted run's weights, optimiser state and losses: **{s['all_same']}**",
        "",
        "| trial | model | signal | where each signal struck, what `last/` held after it | same |",
        "|---|---|---|---|---|",
    ]
    for t in report["trials"]:
        lines.append(f"| {t['trial']} | {t['model']} | SIG{t['signal'].upper()} | {_describe(t)} | {t['same']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
