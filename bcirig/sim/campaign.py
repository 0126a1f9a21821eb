"""``bcirig simulate PROTOCOL --mice N --days D --rule RULE --seed S``: days of training of simulated mice.

Each mouse runs the daily workflow (baseline -> calibration -> trials) with the live rig's task and
pipeline stages, inline. Across days it carries its brain's learned synapses (``MouseState``) and the
task's calibration (``Task.carry_forward``: the threshold never gets easier). Mice run in parallel
(one process per worker); one session file per mouse per day; a summary JSON and a PNG of learning
curves at the end. Same seed and arguments -> the same session data.

Seeds: mouse ``m`` has anatomy seed ``S * 1000 + m`` whatever its rule, so the rules are compared on
the same simulated animals; day ``d`` draws its noise from ``SeedSequence([S, m, d])``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bcirig.config import Protocol, load_protocol
from bcirig.messages import Outcome
from bcirig.schema import ConfigError
from bcirig.sim.brain import MouseState, dale_violations
from bcirig.sim.config import LearningRule, SimConfig, SimLevel, parse_sim_config
from bcirig.sim.session import run_day


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line arguments of ``bcirig simulate``."""
    p = argparse.ArgumentParser(
        prog="bcirig simulate",
        description="Days of training of simulated mice: baseline, calibration and trials each day, learned "
        "synapses and calibration carried across days; one session file per mouse-day, a summary JSON and a PNG.",
    )
    p.add_argument("protocol", help="protocol file (its [simulation] table sets the mouse parameters)")
    p.add_argument("--mice", type=int, default=8, help="mice per rule (default 8)")
    p.add_argument("--days", type=int, default=0,
                   help="days of training (default: the protocol's simulation.days, else 14)")
    p.add_argument("--rule", default="vectorized",
                   help=f"learning rule, a comma-separated list, or 'all' ({', '.join(LearningRule)})")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--level", choices=[level.value for level in SimLevel], default=None,
                   help="fidelity (default: the protocol's simulation.level, else traces)")
    p.add_argument("--trials", type=int, default=0, help="override trials.count (0 = the protocol's)")
    p.add_argument("--baseline", type=int, default=0, help="override baseline.frames (0 = the protocol's)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="override the frame size (traces level: only geometry; pixels level: speed)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    p.add_argument("--out", default="", help="output folder (default sim_runs/<protocol>_s<seed>)")
    p.add_argument("--no-sessions", action="store_true", help="skip the per-day session files (faster)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    names = [r.strip() for r in args.rule.split(",") if r.strip()]
    known = {str(r) for r in LearningRule}
    if args.rule != "all" and (not names or not known.issuperset(names)):
        p.error(f"--rule {args.rule!r}: expected one or more of {', '.join(LearningRule)} (comma-separated) or 'all'")
    rules = list(LearningRule) if args.rule == "all" else [LearningRule(r) for r in names]
    if args.mice < 1 or args.days < 0 or args.workers < 1:
        p.error("--mice and --workers must be >= 1, --days >= 1 (0 = the protocol's)")
    args.rules = rules
    args.level = SimLevel(args.level) if args.level else None
    return args


def campaign_protocol(args: argparse.Namespace) -> Protocol:
    """The protocol file with the command line's overrides applied."""
    proto = load_protocol(args.protocol)
    if args.trials:
        proto = dataclasses.replace(proto, trials=dataclasses.replace(proto.trials, count=args.trials))
    if args.baseline:
        proto = dataclasses.replace(proto, baseline=dataclasses.replace(proto.baseline, frames=args.baseline))
    if args.size:
        h, w = args.size
        proto = dataclasses.replace(proto, imaging=dataclasses.replace(proto.imaging, height=h, width=w))
    return proto


def mouse_config(proto: Protocol, rule: LearningRule, level: SimLevel | None) -> SimConfig:
    """The protocol's [simulation] table with this run's rule (and level) applied."""
    cfg = parse_sim_config(proto.simulation, proto.source_path or "<protocol>")
    return dataclasses.replace(cfg, rule=rule, level=level or cfg.level)


def day_seed(seed: int, mouse: int, day: int) -> int:
    """Independent, reproducible seed of one mouse-day."""
    return int(np.random.SeedSequence([seed, mouse, day]).generate_state(1, np.uint32)[0])


def _writer(path: Path, proto: Protocol, cfg: SimConfig, mouse: Any, seed: int, day: int, rule: LearningRule) -> Any:
    """The lead's SWMR session writer, with the simulator's ground truth as extra per-frame columns."""
    from bcirig.recording import SessionWriter
    from bcirig.recording.layout import truth_fields

    n_bci = mouse.brain.anatomy.n_bci
    truth = truth_fields(("shift", "licks", "rpe", "rates", "spikes"), rates=(n_bci,),
                         spikes=(len(mouse.bci_sources),))
    rois = mouse.rois()
    return SessionWriter(
        path, protocol_text=proto.source_text, rig_text="(simulated: bcirig simulate)",
        rois=rois.to_arrays(), n_rois=len(rois), reference=mouse.reference_image(),
        frame_shape=mouse.frame_shape, frame_dtype=proto.imaging.dtype,
        record_frames=cfg.level == SimLevel.PIXELS and proto.recording.frames, truth_fields=truth,
        attrs={"sim_rule": rule, "sim_seed": seed, "sim_day": day, "sim_anatomy_seed": mouse._state.anatomy_seed,
               "sim_config": dataclasses.asdict(cfg), "sim_level": cfg.level,
               "sim_sources": [dataclasses.asdict(s) for s in mouse.sources]},
        flush_interval_s=proto.recording.flush_interval_s,
    )


def _save_state(path: Path, state: MouseState, cfg: SimConfig, proto: Protocol) -> None:
    """Ground truth of learning, beside the session: the plastic synapses at the end of the day."""
    import h5py

    from bcirig.sim.brain import build_anatomy

    anatomy, w0 = build_anatomy(cfg, proto, state.anatomy_seed)
    with h5py.File(path, "a") as f:
        g = f.create_group("sim_state")
        g.attrs["rule"] = state.rule.value
        g.attrs["anatomy_seed"] = state.anatomy_seed
        g.attrs["reward_expectation"] = state.value
        g.attrs["days_completed"] = state.day
        g.create_dataset("bci_sign", data=anatomy.sign)
        g.create_dataset("plastic_units", data=anatomy.plastic)
        g.create_dataset("plastic_excitatory", data=anatomy.excitatory[anatomy.plastic])
        g.create_dataset("w_plastic", data=state.w_rec[: anatomy.n_bci][:, anatomy.plastic])
        g.create_dataset("w_plastic_naive", data=w0[: anatomy.n_bci][:, anatomy.plastic])


def run_mouse(job: dict[str, Any]) -> dict[str, Any]:
    """All days of one mouse (runs in a worker process); returns its per-day results."""
    from bcirig.sim.brain import fresh_state
    from bcirig.threads import pin_blas_threads

    pin_blas_threads()  # a spawned worker starts with the machine's default thread count
    args, rule, m, queue = job["args"], job["rule"], job["mouse"], job.get("queue")
    proto = campaign_protocol(args)
    cfg = mouse_config(proto, rule, args.level)
    out = Path(job["out"])
    state: MouseState | None = None
    carried: dict[str, Any] | None = None
    days = []
    anatomy_seed = args.seed * 1000 + m
    for d in range(args.days):
        seed = day_seed(args.seed, m, d)
        day_proto = dataclasses.replace(proto, protocol=dataclasses.replace(proto.protocol, seed=seed % 2**31))
        if state is None:
            state = fresh_state(cfg, day_proto, anatomy_seed)
        path = out / f"{rule}_m{m:02d}" / f"day{d + 1:02d}_1" / "session.h5"

        def make_writer(mouse: Any, path: Path = path, p: Protocol = day_proto, s: int = seed, d: int = d) -> Any:
            return _writer(path, p, cfg, mouse, s, d + 1, rule)

        res = run_day(day_proto, cfg, seed, state, carried, keep_arrays=False,
                      make_writer=None if args.no_sessions else make_writer)
        state, carried = res.state, res.carried
        if not args.no_sessions:
            _save_state(path, state, cfg, day_proto)
        hits = [t["frames"] for t in res.trials if t["outcome"] == Outcome.HIT]
        days.append({
            "phases": {ph["name"]: {k: ph[k] for k in ("trials", "hits", "hit_rate", "rewards")}
                       for ph in res.summary.get("phases", [])},
            "day": d + 1, **{k: res.summary[k] for k in ("trials", "hits", "aborts", "timeouts", "hit_rate",
                                                        "frames", "seconds")},
            "chance": res.calibration.get("achieved_fraction", float("nan")),
            "threshold": res.calibration.get("threshold", float("nan")),
            "threshold_z": res.calibration.get("threshold_z", float("nan")),
            "median_time_to_hit_s": float(np.median(hits)) / proto.imaging.frame_rate_hz if hits else float("nan"),
            "dale_violations": dale_violations(state, cfg, day_proto),
            "reward_expectation": state.value,
        })
        if queue is not None:
            queue.put(1)
    return {"rule": rule, "mouse": m, "anatomy_seed": anatomy_seed, "days": days}


def summarize(results: list[dict[str, Any]], rules: list[LearningRule], n_days: int) -> dict[str, Any]:
    """Per rule and day: mean and SEM over mice of hit rate, calibrated chance, time to hit."""
    out: dict[str, Any] = {}
    for rule in rules:
        mice = sorted((r for r in results if r["rule"] == rule), key=lambda r: r["mouse"])
        per_day = []
        for d in range(n_days):
            row: dict[str, Any] = {"day": d + 1}
            for key in ("hit_rate", "chance", "median_time_to_hit_s", "threshold_z"):
                vals = np.array([m["days"][d][key] for m in mice], float)
                ok = vals[np.isfinite(vals)]
                row[key] = float(ok.mean()) if ok.size else float("nan")
                row[key + "_sem"] = float(ok.std(ddof=1) / math.sqrt(ok.size)) if ok.size > 1 else float("nan")
            per_day.append(row)
        names = list(dict.fromkeys(n for m in mice for d in m["days"] for n in d.get("phases", {})))
        phases: dict[str, list[float]] = {}
        for name in names:  # per phase: the mean hit rate over mice, by day (NaN on days without the phase)
            phases[name] = []
            for d in range(n_days):
                vals = np.array([m["days"][d]["phases"].get(name, {}).get("hit_rate", float("nan"))
                                 for m in mice], float)
                ok = vals[np.isfinite(vals)]
                phases[name].append(float(ok.mean()) if ok.size else float("nan"))
        out[rule] = {"mice": len(mice), "days": per_day, **({"phases": phases} if len(names) > 1 else {})}
    return out


def _progress(done: int, total: int, t0: float, quiet: bool) -> None:
    if quiet:
        return
    width = 30
    fill = int(width * done / max(total, 1))
    el = time.perf_counter() - t0
    eta = el / done * (total - done) if done else float("nan")
    sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} mouse-days  {el:5.0f} s  eta {eta:5.0f} s")
    sys.stderr.flush()


def main(argv: list[str]) -> int:
    """Run the campaign; returns a process exit code (0 ok, 2 bad arguments or configuration)."""
    args = parse_args(argv)
    try:
        proto = campaign_protocol(args)
        if not args.days:
            args.days = parse_sim_config(proto.simulation, proto.source_path or "<protocol>").days
        for rule in args.rules:
            mouse_config(proto, rule, args.level)
    except ConfigError as exc:
        print(f"bcirig simulate: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"sim_runs/{proto.protocol.name}_s{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    total = len(args.rules) * args.mice * args.days
    ctx = mp.get_context("spawn")
    results: list[dict[str, Any]] = []
    with ctx.Manager() as manager:
        queue = manager.Queue()
        jobs = [{"args": args, "rule": r, "mouse": m, "out": str(out), "queue": queue}
                for m in range(args.mice) for r in args.rules]
        done = 0
        _progress(done, total, t0, args.quiet)
        if args.workers == 1:
            for job in jobs:
                results.append(run_mouse(job))
                while not queue.empty():
                    queue.get()
                    done += 1
                _progress(done, total, t0, args.quiet)
        else:
            with ctx.Pool(args.workers) as pool:
                pending = pool.map_async(run_mouse, jobs, chunksize=1)
                while not pending.ready() or done < total:
                    try:
                        queue.get(timeout=0.5)
                        done += 1
                        _progress(done, total, t0, args.quiet)
                    except Exception:  # queue.Empty: keep polling until the pool is done
                        if pending.ready():
                            break
                results = pending.get()
    elapsed = time.perf_counter() - t0
    if not args.quiet:
        sys.stderr.write("\n")
    proto_cfg = mouse_config(proto, args.rules[0], args.level)
    summary = {
        "protocol": proto.protocol.name, "protocol_path": args.protocol, "seed": args.seed,
        "mice": args.mice, "days": args.days, "rules": args.rules, "level": proto_cfg.level,
        "trials_per_day": proto.trials.count, "baseline_frames": proto.baseline.frames,
        "workers": args.workers, "seconds": elapsed,
        "frames": int(sum(d["frames"] for r in results for d in r["days"])),
        "sim_config": {k: v for k, v in dataclasses.asdict(proto_cfg).items() if k != "rule"},
        "curves": summarize(results, args.rules, args.days),
        "per_mouse": sorted(results, key=lambda r: (r["rule"], r["mouse"])),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=True))
    try:
        from bcirig.sim.plot import plot_curves

        plot_curves(summary, out / "learning_curves.png")
    except ImportError as exc:  # matplotlib missing: the JSON still has every number
        print(f"bcirig simulate: no plot ({exc})", file=sys.stderr)
    if not args.quiet:
        for rule, c in summary["curves"].items():
            hr = " ".join(f"{d['hit_rate']:.2f}" for d in c["days"])
            ch = " ".join(f"{d['chance']:.2f}" for d in c["days"])
            print(f"{rule:>10}: hit rate by day  {hr}\n{'':>10}  calibrated chance {ch}")
            for name in c.get("phases", {}):
                ph = " ".join(f"{v:.2f}" if math.isfinite(v) else "  - " for v in c["phases"][name])
                print(f"{'':>10}  {name:<17} {ph}")
        print(f"{summary['frames']} frames in {elapsed:.1f} s -> {out}")
    return 0


__all__ = ["main", "parse_args", "run_mouse", "summarize"]
