"""``bcirig bench``: latency, throughput and accuracy of the processing pipeline, against the targets.

Sections (all on synthetic movies with known motion, :mod:`bcirig.processing.synthetic`):

* ``latency``  — in-process, paced at the imaging rate: frame arrival (its scheduled time, so any
  queueing counts) to readout ready, for 512x512 uint16 at 30 Hz with 10 and 500 ROIs and 128x128 at
  1 kHz; median, p99, max, frames late (finished after the next frame arrived), per-stage medians.
* ``baseline`` — the same frames through :class:`~bcirig.processing.naive.NaivePipeline` (plain NumPy),
  alternating frame by frame with bcirig so both see the same machine load; the ratio of medians.
* ``replay``   — offline throughput, 512x512, 10 ROIs: one thread, and registration on a second thread.
* ``registration`` — RMS error of the estimated shift against the known shifts (+-20 px, Poisson noise).
* ``transfer`` — a 512 x 796 frame through each way in, beside a bare socket and CLOOSE's figure
  (:mod:`bcirig.bench.live`);
* ``live``     — ``bcirig send`` -> a whole realtime session: sent -> readout, sent -> feedback, drops.
* ``console``  — the same session with and without the operator's console, alternating: what it adds to
  the loop's p99 (:mod:`bcirig.bench.console`).
* ``display``  — the mouse display node (OpenGL, under Xvfb when there is no DISPLAY): a feedback
  change's arrival -> the buffer swap, against one 60 Hz refresh (:mod:`bcirig.bench.display`).

Targets are reported, never asserted: shared machines drift, which is why ratios are measured in the
same run. The F0 window is pre-filled to its full length (3480 frames) so the incremental percentile
is measured at its steady-state cost.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bcirig.bench.common import bench_protocol
from bcirig.bench.pipeline import (
    CASES,
    paced_latency,
    prefill_f0,
    registration_accuracy,
    replay_throughput,
    versus_numpy,
)
from bcirig.processing import Pipeline
from bcirig.processing.synthetic import Movie, make_movie

# Wall-clock latency includes waiting for a core when other processes load the machine; the CPU
# time the pipeline thread itself used is reported beside it so a loaded run can still be read.

TARGETS: dict[str, Any] = {
    "512x512@30Hz 10 ROIs": {"median_ms": 2.0, "p99_ms": 3.5},
    "512x512@30Hz 500 ROIs": {"median_ms": 2.5},
    "128x128@1kHz 10 ROIs": {"median_ms": 0.5, "late": 0},
    "speedup_vs_numpy": 5.0,
    "replay_fps": 1200.0,
    "registration_rms_px": 0.03,  # unbiased since the taper is modelled (issue #9: was 0.2)
    "transfer_median_ms": 0.5,  # the live-microscope issue's targets, beside CLOOSE's 3.0 ms
    "live": {"512x796@30Hz 10 ROIs": {"path": "sent_to_readout", "median_ms": 2.5, "p99_ms": 5.0},
             "128x128@1kHz 10 ROIs": {"path": "sent_to_feedback", "median_ms": 3.0, "p99_ms": 3.0, "drops": 0}},
}

def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected sections; returns the JSON-ready results."""
    quick = args.quick
    results: dict[str, Any] = {"quick": quick, "targets": TARGETS, "latency": {}, "baseline": {}}
    sections = set(args.sections.split(","))
    movies: dict[str, Movie] = {}
    for name, h, w, n_rois, rate in CASES:
        if not sections & {"latency", "baseline"}:
            break
        movie = movies[name] = make_movie(12 if quick else 32, h, w, n_rois, seed=3)
        pipe = Pipeline(bench_protocol(h, w, rate), movie.rois, movie.reference)
        prefill_f0(pipe, movie)
        if "latency" in sections:
            n = (1000 if quick else 5000) if rate > 100 else (60 if quick else 300)
            results["latency"][name] = paced_latency(pipe, movie, n, rate)
        if "baseline" in sections:
            n = (15 if quick else 40) if n_rois > 100 else (40 if quick else 200)
            results["baseline"][name] = versus_numpy(pipe, movie, n)
    if "replay" in sections:
        movie = movies.get(CASES[0][0]) or make_movie(12 if quick else 32, 512, 512, 10, seed=3)
        results["replay"] = replay_throughput(movie, 300 if quick else 2000)
    if "registration" in sections:
        results["registration"] = registration_accuracy(30 if quick else 100)
    if "transfer" in sections:
        from bcirig.bench.live import transfers

        results["transfer"] = transfers(quick=quick)
    if "live" in sections:
        from bcirig.bench.live import chains

        results["live"] = chains(quick=quick)
    if "console" in sections:
        from bcirig.bench.console import overhead

        results["console"] = overhead(quick=quick)
    if "display" in sections:
        from bcirig.bench.display import display_latency

        results["display"] = display_latency(frames=150 if quick else 600)
    return results


def report(results: dict[str, Any]) -> str:
    """The results as a plain-text table, each line with its target."""
    lines = [f"{'measure':<58}{'value':>12}  target"]

    def row(label: str, value: float, target: str, ok: bool | None) -> None:
        mark = "" if ok is None else ("  ok" if ok else "  MISSED")
        lines.append(f"{label:<58}{value:>12.3f}  {target}{mark}")

    for name, r in results.get("latency", {}).items():
        t = TARGETS[name]
        row(f"{name}: median ms (in-process)", r["median_ms"], f"<= {t['median_ms']}", r["median_ms"] <= t["median_ms"])
        row(f"{name}: p99 ms", r["p99_ms"], f"<= {t['p99_ms']}" if "p99_ms" in t else "",
            r["p99_ms"] <= t["p99_ms"] if "p99_ms" in t else None)
        row(f"{name}: max ms", r["max_ms"], "", None)
        row(f"{name}: CPU time per frame, median ms", r["cpu_median_ms"], "(wall time minus waiting for a core)", None)
        row(f"{name}: frames late / {r['frames']}", r["late"], "0" if "late" in t else "",
            r["late"] == 0 if "late" in t else None)
        s = r["stage_median_ms"]
        lines.append(f"    stages (median ms): register {s['register']:.3f}  extract {s['extract']:.3f}  "
                     f"F0+dF/F+decode {s['f0_dff_decode']:.3f}")
    for name, r in results.get("baseline", {}).items():
        row(f"{name}: NumPy baseline median ms", r["numpy_median_ms"], "", None)
        row(f"{name}: speed-up vs NumPy (same run)", r["speedup"], f">= {TARGETS['speedup_vs_numpy']}",
            r["speedup"] >= TARGETS["speedup_vs_numpy"])
    if "replay" in results:
        r = results["replay"]
        row("replay 512x512 10 ROIs: frames/s, one thread", r["sequential_fps"], "", None)
        row("replay 512x512 10 ROIs: frames/s, registration on 2nd thread", r["two_threads_fps"],
            f">= {TARGETS['replay_fps']:.0f}", max(r["sequential_fps"], r["two_threads_fps"]) >= TARGETS["replay_fps"])
    if "registration" in results:
        r = results["registration"]
        target = TARGETS["registration_rms_px"]
        row("registration RMS error px (per axis, +-20 px, Poisson)", r["rms_px"], f"<= {target}",
            r["rms_px"] <= target)
        row("registration max |error| px", r["max_abs_px"], "", None)
    if "transfer" in results:
        from bcirig.bench.live import CLOOSE_MS

        lines.append(f"transfer of one 512x796 uint16 frame over loopback (CLOOSE: {CLOOSE_MS['one_pc']} ms on one PC)")
        for kind, r in results["transfer"].items():
            label = {"socket": "bare socket (baseline)", "zmq": "bcirig protocol, ZeroMQ",
                     "tcp": "bcirig protocol, plain TCP", "cloose": "CLOOSE stream"}[kind]
            target = TARGETS["transfer_median_ms"]
            ok = r["median_ms"] <= target if kind != "socket" else None
            row(f"  {label}: median ms", r["median_ms"], f"<= {target}" if ok is not None else "", ok)
            row(f"  {label}: p99 ms", r["p99_ms"], "", None)
            row(f"  {label}: ratio to bare socket", r["ratio_to_socket"], "", None)
            if not r["identical"] or r["received"] < r["frames"]:
                lines.append(f"    !! {r['received']}/{r['frames']} received, identical: {r['identical']}")
    for name, r in results.get("live", {}).items():
        if "error" in r:
            lines.append(f"live {name}: not measured: {r['error']}")
            continue
        lines.append(f"live {name}: bcirig send -> session ({r['readouts']} readouts, {r['decided']} decisions "
                     f"for {r['frames']} frames sent; dropped {r['dropped_frames']}; sender: {r['sender']})")
        t = TARGETS["live"].get(name, {})
        row("  sent -> arrived: median ms", r["transfer"]["median_ms"], "", None)
        for key, label in (("sent_to_readout", "sent -> readout published"),
                           ("sent_to_feedback", "sent -> task feedback/command sent")):
            s = r[key]
            tm, tp = (t.get("median_ms"), t.get("p99_ms")) if key == t.get("path") else (None, None)
            row(f"  {label}: median ms", s["median_ms"], f"<= {tm}" if tm else "", s["median_ms"] <= tm if tm else None)
            row(f"  {label}: p99 ms", s["p99_ms"], f"<= {tp}" if tp else "", s["p99_ms"] <= tp if tp else None)
        if "drops" in t:
            lost = r["frames"] - r["readouts"] + r["dropped_frames"]
            row("  frames lost (sent, never processed)", float(lost), "0", lost == 0)
        for e in r["errors"] + ([r["session_error"]] if r["session_error"] else []):
            lines.append(f"    !! {e}")
    if "console" in results:
        from bcirig.bench.console import report_lines

        lines += report_lines(results["console"])
    if "display" in results:
        from bcirig.bench.display import report_lines as display_lines

        lines += display_lines(results["display"])
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Entry point of ``bcirig bench``; prints the table, writes JSON if asked. Returns 0."""
    p = argparse.ArgumentParser(prog="bcirig bench", description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--quick", action="store_true", help="fewer frames (about 30 s instead of a few minutes)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--sections", default="latency,baseline,replay,registration,transfer,live,console,display",
                   help="comma-separated subset of latency,baseline,replay,registration,transfer,live,console,"
                        "display")
    args = p.parse_args(argv)
    results = run(args)
    print(report(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
