"""``bcirig`` command line: run, demo, replay, summary, export, validate, bench, simulate, send, keys."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from bcirig import examples
from bcirig.modes import RunMode
from bcirig.schema import ConfigError

DEFAULT_RIG = "sim"  # shipped rig and protocol names (bcirig.examples); a path is used as given
DEMO_PROTOCOL = "demo"
DEMO_DISPLAY_RIG = "sim-display"  # `bcirig demo` on a machine with a display: the sim rig with the Qt display


def _run(args: argparse.Namespace) -> int:
    return _run_session(args)[0]


def _run_session(args: argparse.Namespace) -> tuple[int, Path]:
    from bcirig.summary import format_summary
    from bcirig.supervisor import Supervisor

    if getattr(args, "protocol_opt", None):
        if args.protocol:
            raise FileNotFoundError(f"two protocols given: {args.protocol} and --protocol {args.protocol_opt}")
        args.protocol = args.protocol_opt
    if not args.protocol:
        raise FileNotFoundError("no protocol: give one, e.g. `bcirig run francioni2026` or --protocol FILE")
    args.protocol, args.rig = str(examples.protocol(args.protocol)), str(examples.rig(args.rig))
    from bcirig.setup import parse_choose

    choose = parse_choose(args.choose) if args.choose else None
    setup = None
    if args.setup:
        from bcirig.setup import Setup

        if not Path(args.setup).is_file():
            raise FileNotFoundError(f"--setup {args.setup}: no such file (a setup.npz from a session folder)")
        setup = Setup.load(args.setup)

    sup = Supervisor(args.protocol, args.rig, data_dir=args.data_dir, subject=args.subject, mode=args.mode,
                     record_frames=False if args.no_frames else None, progress=sys.stderr,
                     carried={} if args.fresh else None, console=_want_console(args), setup=setup, fresh=args.fresh,
                     previous=args.previous, rois=args.rois or "", choose=choose, allow_pickle=args.allow_pickle,
                     setup_console=args.setup_console, node_options=getattr(args, "node_options", None))
    if sup.previous is not None:
        print(f"bcirig: {args.subject}: training day {sup.day}; continuing from {sup.previous.session_dir} "
              f"(ROIs found again on today's field; calibration carried: {sup.carried}); --fresh starts afresh",
              file=sys.stderr)
    else:
        print(f"bcirig: {args.subject}: training day {sup.day}", file=sys.stderr)
    print(f"bcirig: running {args.protocol} on rig {args.rig} ({args.mode}); writing {sup.data_dir}/",
          file=sys.stderr)
    result = sup.run()
    if result.summary and "trials" in result.summary:
        print(format_summary(result.summary, str(result.path)))
        if result.summary.get("complete"):
            from bcirig.plots import plot_session

            print(f"\n  figure: {plot_session(result.path)}")
    if result.outcome == "stopped":
        print(f"bcirig: session {result.reason}; the file keeps everything up to the stop: {result.path}",
              file=sys.stderr)
        return 130, result.path
    if not result.ok:
        print(f"bcirig: session failed: {result.error}", file=sys.stderr)
        print(f"bcirig: the file keeps everything up to the failure: {result.path}", file=sys.stderr)
        return 1, result.path
    return 0, result.path


def has_display() -> bool:
    """A screen to open windows on: DISPLAY or WAYLAND_DISPLAY set, and Qt not told to draw offscreen."""
    import os

    screen = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return screen and os.environ.get("QT_QPA_PLATFORM", "") != "offscreen"


def _want_console(args: argparse.Namespace) -> bool:
    """--console / --no-console, else: the console opens when there is a display."""
    return bool(args.console) if args.console is not None else has_display()


def _console(args: argparse.Namespace) -> int:
    from bcirig.gui.console_link import attach_main

    return attach_main(args.folder)


def _demo(args: argparse.Namespace) -> int:
    args.protocol = str(DEMO_PROTOCOL)
    if args.rig == DEFAULT_RIG and has_display():  # a screen here: the mouse's grating in a window too
        args.rig = DEMO_DISPLAY_RIG
        args.node_options = {"display": {"size": [800, 500]}}  # a window beside the console, not full screen
    args.fresh = True  # the demo is the same every time: no calibration carried from an earlier demo
    code, latest = _run_session(args)
    if code != 0:
        return code
    from bcirig.replay import replay

    print()
    rep = replay(latest)
    print(rep.text())
    print(f"\nReplay it yourself:  bcirig replay {latest}")
    return 0 if rep.identical else 1


def _replay(args: argparse.Namespace) -> int:
    from bcirig.replay import main

    return main(args.session, args.set or [], args.json)


def _export(args: argparse.Namespace) -> int:
    return EXPORTS[args.format](args)


def _export_suite2p(args: argparse.Namespace) -> int:
    from bcirig.export import export_suite2p

    out = args.out or str(Path(args.session).parent)
    for folder in export_suite2p(args.session, out):
        print(f"bcirig: wrote {folder}/ (stat.npy, F.npy, Fneu.npy, iscell.npy, ops.npy)")
    return 0


def _export_nwb(args: argparse.Namespace) -> int:
    from bcirig.export.common import load_session_data
    from bcirig.export.nwb import export_nwb, inspect, is_simulated

    meta = {k: v for k, v in (("species", args.species), ("sex", args.sex), ("age", args.age),
                              ("indicator", args.indicator), ("location", args.location),
                              ("experimenter", args.experimenter), ("institution", args.institution)) if v}
    if args.excitation_nm is not None:
        meta["excitation_nm"] = args.excitation_nm
    if not is_simulated(load_session_data(args.session)):
        missing = [f"--{k}" for k in ("age", "location", "indicator") if k not in meta]
        if missing:
            print(f"bcirig: note: a real mouse's {', '.join(missing)} were not given; the file says 'unknown' "
                  "and nwbinspector will flag it", file=sys.stderr)
    path = export_nwb(args.session, args.out, frames=not args.no_frames, **meta)
    print(f"bcirig: wrote {path}")
    if args.inspect:
        found = inspect(path)
        by = {name: sum(m.importance.name == name for m in found)
              for name in ("CRITICAL", "BEST_PRACTICE_VIOLATION", "BEST_PRACTICE_SUGGESTION")}
        print(f"nwbinspector: {by['CRITICAL']} critical, {by['BEST_PRACTICE_VIOLATION']} best-practice violations, "
              f"{by['BEST_PRACTICE_SUGGESTION']} suggestions")
        for m in found:
            print(f"  {m.importance.name}: {m.object_type} {m.object_name}: {m.message}")
        return 1 if by["CRITICAL"] or by["BEST_PRACTICE_VIOLATION"] else 0
    return 0


# bcirig export FORMAT: one exporter per format, chosen by name.
EXPORTS: dict[str, Callable[[argparse.Namespace], int]] = {"nwb": _export_nwb, "suite2p": _export_suite2p}


def _summary(args: argparse.Namespace) -> int:
    from bcirig.report import write_report

    page = write_report(args.paths, args.out)
    print(f"bcirig: report written: {page}")
    print(f"        numbers: {page.parent / 'days.csv'}, {page.parent / 'report.json'}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    """Every check `bcirig run` makes before it starts: each file, then each protocol on each rig given.

    A file is a protocol or a rig by its [protocol] or [rig] table. Protocols are checked on the rigs
    among the files, or on the rig `bcirig run` uses by default when none is given.
    """
    from bcirig.config import Protocol, Rig, load_config, load_rig
    from bcirig.preflight import check_session

    loaded = [(path, load_config(path)) for path in args.files]  # ConfigError: one line, exit 2 (main)
    rigs = [(path, cfg) for path, cfg in loaded if isinstance(cfg, Rig)]
    if not rigs and any(isinstance(cfg, Protocol) for _, cfg in loaded):
        default = examples.rig(DEFAULT_RIG)
        rigs = [(str(default), load_rig(default))]
    for path, cfg in loaded:
        if isinstance(cfg, Rig):
            print(f"{path}: ok (rig)")
            continue
        for _, rig in rigs:
            check_session(cfg, rig)
        print(f"{path}: ok (protocol) on rig {', '.join(rig.rig.name for _, rig in rigs)}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from bcirig.bench import main

    return int(main(args.rest))


def _simulate(args: argparse.Namespace) -> int:
    from bcirig.sim.campaign import main

    return int(main(args.rest))


def _send(args: argparse.Namespace) -> int:
    from bcirig.acquisition.sender import main

    return main(args.rest)


def _keys(args: argparse.Namespace) -> int:
    from bcirig.acquisition.sender import keys_main

    return keys_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="bcirig", description="Closed-loop optical BCI rig software.")
    sub = p.add_subparsers(dest="command", required=True)

    def session_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--rig", default=DEFAULT_RIG,
                        help="rig file, or a shipped rig's name: " + ", ".join(examples.names("rigs"))
                        + f" (default: {DEFAULT_RIG})")
        sp.add_argument("--mode", choices=[m.value for m in RunMode], default=RunMode.REALTIME.value,
                        help="realtime: paced at the imaging rate; lockstep: deterministic, as fast as possible")
        sp.add_argument("--subject", default="sim", help="subject name (folder under the data directory)")
        sp.add_argument("--data-dir", default=None, help="override the rig file's data_dir")
        sp.add_argument("--no-frames", action="store_true", help="do not store raw frames")
        sp.add_argument("--console", action=argparse.BooleanOptionalAction, default=None,
                        help="open the operator's console window (default: when a display is present)")
        sp.add_argument("--setup-console", action="store_true",
                        help="choose the ROIs in the set-up window on the day's reference image, then accept "
                             "(or reject: nothing is recorded)")
        sp.add_argument("--setup", default=None, metavar="SETUP.npz",
                        help="ROIs and reference image to use (a session folder's setup.npz); needed for a live "
                             "source until the set-up phase chooses them on the image")
        sp.add_argument("--fresh", action="store_true",
                        help="start the subject afresh: day 1, no carried ROIs or calibration (its history is "
                             "kept, set aside)")
        sp.add_argument("--previous", default=None, metavar="SESSION_DIR",
                        help="continue from this session's set-up and calibration instead of the subject's last")
        sp.add_argument("--rois", default=None, metavar="FILE",
                        help="day 1's ROIs: a bcirig ROI file (.toml), an ImageJ ROI set (.roi/.zip) or a suite2p "
                             "plane folder (overrides [setup] rois)")
        sp.add_argument("--choose", default=None, metavar="'P+=0,2 P-=1,3'",
                        help="groups by index of the detected candidates (best first) or of the file's ROIs")
        sp.add_argument("--allow-pickle", action="store_true",
                        help="suite2p: load its pickled .npy files (only for files you trust: pickle can run code)")

    sp = sub.add_parser("run", help="run a session: supervisor + one process per node")
    sp.add_argument("protocol", nargs="?", help="protocol file, or a shipped protocol's name: "
                    + ", ".join(examples.names("protocols")))
    sp.add_argument("--protocol", dest="protocol_opt", default=None, help="the same, as an option")
    session_args(sp)
    sp.set_defaults(func=_run)

    sp = sub.add_parser("demo", help="a ~2-minute simulated closed-loop session, then its replay check")
    session_args(sp)
    sp.set_defaults(func=_demo)

    sp = sub.add_parser("console", help="the operator's console, attached to the session running in a folder")
    sp.add_argument("folder", help="the session's folder (or its subject's / the data directory: the newest "
                                   "running session in it)")
    sp.set_defaults(func=_console)

    sp = sub.add_parser("replay", help="re-run a session file through the same stages and compare; with --set, "
                                       "what the decisions would have been with other protocol values")
    sp.add_argument("session")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="what-if: a protocol value to change, as in the protocol file (repeatable), e.g. "
                         "calibration.fixed_threshold=0.3, readout.smoothing.frames=5, readout.f0.kind=running_mean")
    sp.add_argument("--json", default=None, metavar="FILE", help="also write the report's numbers as JSON")
    sp.set_defaults(func=_replay)

    sp = sub.add_parser("export", help="a session file for the field's tools: NWB, or suite2p's output layout")
    sp.add_argument("format", choices=tuple(EXPORTS))
    sp.add_argument("session")
    sp.add_argument("-o", "--out", default=None,
                    help="nwb: the file (default: SESSION with .nwb); suite2p: the folder that gets suite2p/plane<p>/ "
                         "(default: the session's folder)")
    sp.add_argument("--no-frames", action="store_true", help="nwb: leave the raw frames out (much smaller)")
    sp.add_argument("--inspect", action="store_true",
                    help="nwb: run nwbinspector on the file; exit 1 on critical findings or best-practice violations")
    for opt, hint in (("--species", "default Mus musculus"), ("--sex", "M, F, U or O (default U)"),
                      ("--age", "ISO 8601, e.g. P90D (simulated: P8W/)"),
                      ("--location", "Allen CCF term, e.g. 'Retrosplenial area' (simulated: Isocortex)"),
                      ("--indicator", "e.g. GCaMP8m"), ("--experimenter", ""), ("--institution", "")):
        sp.add_argument(opt, default="", help=f"nwb metadata{': ' + hint if hint else ''}")
    sp.add_argument("--excitation-nm", type=float, default=None, help="nwb: two-photon excitation wavelength")
    sp.set_defaults(func=_export)

    sp = sub.add_parser("summary", help="a subject's report, day by day: one HTML page with figures, plus CSV and "
                                        "JSON")
    sp.add_argument("paths", nargs="+", metavar="SUBJECT_DIR|SESSION",
                    help="a subject's folder (<data_dir>/<subject>) or session files")
    sp.add_argument("-o", "--out", default=None, help="output folder (default: SUBJECT_DIR/report, else ./report)")
    sp.set_defaults(func=_summary)

    sp = sub.add_parser("validate", help="check protocol and rig files without running anything")
    sp.add_argument("files", nargs="+")
    sp.set_defaults(func=_validate)

    for name, text in PASS_THROUGH_HELP.items():  # each parses its own options (see PASS_THROUGH)
        sp = sub.add_parser(name, help=text, add_help=False)
        sp.add_argument("rest", nargs=argparse.REMAINDER)
        sp.set_defaults(func=PASS_THROUGH[name])
    return p


# subcommands with their own argument parsers
PASS_THROUGH = {"bench": _bench, "simulate": _simulate, "send": _send, "keys": _keys}
PASS_THROUGH_HELP = {
    "bench": "latency and throughput benchmarks (see --help of the subcommand)",
    "simulate": "days of training of simulated mice",
    "send": "stream a movie to a rig as a microscope would (bcirig frame protocol)",
    "keys": "make a CurveZMQ key pair for the rig or a sender",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bcirig`` console script."""
    from bcirig.threads import pin_blas_threads

    pin_blas_threads()  # every result independent of the machine's thread count (bcirig.threads)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASS_THROUGH:  # argparse.REMAINDER refuses a leading --option
        args = argparse.Namespace(func=PASS_THROUGH[argv[0]], rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"bcirig: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bcirig: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a clear line instead of a traceback for the errors users can act on
        from bcirig.export.common import ExportError

        if isinstance(exc, ExportError):  # pynwb missing, or a session that cannot be exported as asked
            print(f"bcirig: {exc}", file=sys.stderr)
            return 2
        from bcirig.acquisition import SourceError
        from bcirig.recording import SessionFileError
        from bcirig.setup import SetupError
        from bcirig.subjects import SubjectError
        from bcirig.supervisor import SessionError, SessionForced

        if isinstance(exc, SessionForced):
            print(f"bcirig: {exc}", file=sys.stderr)
            return 130
        if isinstance(exc, SessionFileError | FileNotFoundError | SetupError | SourceError | SubjectError
                      | SessionError | PermissionError):
            print(f"bcirig: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
