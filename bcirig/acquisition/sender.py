"""The reference sender of the bcirig frame protocol (``PROTOCOL.md``): ``bcirig send`` and ``bcirig keys``.

:class:`FrameSender` is also the library a Python acquisition program can use to stream its frames to a
rig. ``bcirig send MOVIE`` streams a TIFF, HDF5 or ``.npy`` movie at a fixed rate, as a microscope would.
"""

from __future__ import annotations

import argparse
import itertools
import socket
import sys
import time
from pathlib import Path

import numpy as np
import zmq
import zmq.auth

from bcirig.acquisition import wire
from bcirig.config import Framing

SEND_LINGER_S = 5.0  # close() waits this long for queued ZeroMQ frames to reach the rig, then drops them
PROGRESS_S = 10.0  # long runs: a progress line on stderr this often


class FrameSender:
    """Sends frames to a rig: ZeroMQ PUSH (``framing="zmq"``) or one plain TCP stream (``"tcp"``).

    ``address``: ``tcp://host:port`` (either framing) or ``host:port``. With ZeroMQ and keys it is a
    CurveZMQ client: ``client_key`` is this sender's secret key file, ``server_key`` the rig's public one.
    """

    def __init__(self, address: str, framing: Framing | str, *, server_key: str | None = None,
                 client_key: str | None = None) -> None:
        try:
            self.framing = Framing(framing)
        except ValueError:
            raise ValueError(f"framing {framing!r}: {' or '.join(repr(f.value) for f in Framing)}") from None
        if (server_key is None) != (client_key is None):
            raise ValueError("CurveZMQ needs both keys: the rig's public key and this sender's secret key")
        hostport = address.removeprefix("tcp://")
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address {address!r}: expected host:port or tcp://host:port")
        self.address = f"tcp://{hostport}"
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._push: zmq.Socket[bytes] | None = None
        self._tcp: socket.socket | None = None
        if self.framing == Framing.TCP:
            if server_key is not None:
                raise ValueError("the plain TCP framing has no keys; use framing 'zmq' for CurveZMQ")
            try:
                self._tcp = socket.create_connection((host.strip("[]"), int(port)), timeout=10.0)
            except OSError as exc:
                raise ConnectionError(f"cannot connect to {hostport}: {exc.strerror or exc}") from None
            self._tcp.settimeout(None)
            self._tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each frame leaves at once
            return
        self._ctx = zmq.Context()
        self._push = self._ctx.socket(zmq.PUSH)
        try:
            self._push.setsockopt(zmq.IPV6, int(host.startswith("[")))
            if server_key is not None and client_key is not None:
                public, secret = zmq.auth.load_certificate(client_key)
                if secret is None:
                    raise ValueError(f"{client_key}: no secret key in it (the sender's NAME.key_secret)")
                self._push.curve_publickey = public
                self._push.curve_secretkey = secret
                self._push.curve_serverkey = zmq.auth.load_certificate(server_key)[0]
            self._push.connect(self.address)
        except BaseException:
            self.close(linger_s=0)
            raise

    def send(self, data2d: np.ndarray, index: int, t_acq_ns: int, plane: int, column_major: bool = False) -> None:
        """Send one plane image (blocks while the link is full). ``column_major`` sends the pixels
        down each column first (MATLAB's order); either way ``data2d`` is the (height, width) image.

        ZeroMQ sends from ``data2d``'s memory without copying: do not modify the array afterwards."""
        pixels = np.ascontiguousarray(data2d.T if column_major else data2d)  # no copy if already so laid out
        header = wire.pack_header(index, t_acq_ns, plane, data2d, column_major=column_major)
        if self._push is not None:
            self._push.send(header, zmq.SNDMORE)
            self._push.send(pixels.data, copy=False)
        elif self._tcp is not None:
            _sendmsg_all(self._tcp, [memoryview(header), pixels.data.cast("B")])
        else:
            raise ValueError("the sender is closed")

    def close(self, linger_s: float = SEND_LINGER_S) -> None:
        """Close (idempotent); ZeroMQ first waits up to ``linger_s`` for queued frames to leave."""
        if self._push is not None:
            self._push.close(linger=int(linger_s * 1000))
            self._push = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None


def _sendmsg_all(sock: socket.socket, views: list[memoryview]) -> None:
    """Header and pixels in one system call where the kernel takes them (no joined copy)."""
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


class MovieError(ValueError):
    """A movie file that cannot be streamed (names the file and what is wrong)."""


def load_movie(path: str | Path, dataset: str | None = None) -> np.ndarray:
    """A (frames, height, width) movie from TIFF, HDF5 (``dataset``, default the first 3-D one) or .npy."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            movie = np.asarray(tifffile.imread(path))
        elif suffix in (".h5", ".hdf5"):
            movie = _read_h5(path, dataset)
        elif suffix == ".npy":
            movie = np.load(path, mmap_mode="r", allow_pickle=False)  # mapped: big movies are not read at once
        else:
            raise MovieError(f"{path}: unknown movie type {suffix!r} (.tif, .tiff, .h5, .hdf5 or .npy)")
    except MovieError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise MovieError(f"{path}: cannot read it as a movie: {exc}") from None
    if movie.ndim == 2:
        movie = movie[None]
    if movie.ndim != 3 or 0 in movie.shape:
        raise MovieError(f"{path}: shape {movie.shape}, expected (frames, height, width)")
    if movie.dtype.name not in wire.CODE_OF and movie.dtype.newbyteorder("=").name not in wire.CODE_OF:
        raise MovieError(f"{path}: pixel type {movie.dtype} cannot be sent; one of {', '.join(wire.CODE_OF)}")
    return movie


def _read_h5(path: Path, dataset: str | None) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        if dataset is None:
            found: list[str] = []
            f.visititems(lambda name, obj: found.append(name)
                         if isinstance(obj, h5py.Dataset) and obj.ndim == 3 and not found else None)
            if not found:
                raise MovieError(f"{path}: no 3-D dataset in it (choose one with --dataset)")
            dataset = found[0]
        obj = f.get(dataset)
        if not isinstance(obj, h5py.Dataset):
            raise MovieError(f"{path}: no dataset {dataset!r} in it")
        return np.asarray(obj[()])


def send_parser() -> argparse.ArgumentParser:
    """``bcirig send``'s arguments."""
    p = argparse.ArgumentParser(prog="bcirig send", description="Stream a movie to a rig with the bcirig "
                                "frame protocol, at a fixed rate, as a microscope would.")
    p.add_argument("movie", help="TIFF, HDF5 or .npy movie (frames, height, width)")
    p.add_argument("--rate", type=float, required=True, help="frames per second (every plane's frame counts)")
    p.add_argument("--to", default="tcp://127.0.0.1:5600", help="the rig's address (default %(default)s)")
    p.add_argument("--framing", choices=[f.value for f in Framing], default=Framing.ZMQ.value)
    p.add_argument("--planes", type=int, default=1, help="consecutive frames are planes 0..N-1 of a volume")
    p.add_argument("--drop", type=int, default=0, metavar="EVERY",
                   help="skip every EVERY-th frame (its index is used up: the rig sees a gap)")
    p.add_argument("--count", type=int, default=None,
                   help="frames to stream (default: the movie, once; more than the movie only with --loop)")
    p.add_argument("--loop", action="store_true", help="start the movie again at its end")
    p.add_argument("--dataset", default=None, help="HDF5: the dataset (default: the first 3-D one)")
    p.add_argument("--column-major", action="store_true", help="send pixels in MATLAB's order")
    p.add_argument("--server-key", default=None, help="CurveZMQ: the rig's public key file")
    p.add_argument("--client-key", default=None, help="CurveZMQ: this sender's secret key file")
    return p


def main(argv: list[str]) -> int:
    """``bcirig send``: stream a movie on an absolute schedule; one summary line at the end (Ctrl-C ends a
    ``--loop`` run and still prints it)."""
    args = send_parser().parse_args(argv)
    if not (args.rate > 0 and args.planes >= 1 and args.drop >= 0 and (args.count is None or args.count >= 0)):
        print("bcirig send: --rate must be > 0, --planes >= 1, --drop and --count >= 0", file=sys.stderr)
        return 2
    try:
        movie = load_movie(args.movie, args.dataset)
        sender = FrameSender(args.to, args.framing, server_key=args.server_key, client_key=args.client_key)
    except (ValueError, OSError, zmq.ZMQError) as exc:
        print(f"bcirig send: {exc}", file=sys.stderr)
        return 2
    total: int | None = args.count  # None with --loop: until Ctrl-C
    if not args.loop:
        total = len(movie) if total is None else min(total, len(movie))
    period = 1.0 / args.rate
    sent = skipped = late = i = 0
    t0 = next_progress = time.monotonic()
    first = last = (0, t0)  # (index, time) of the first and the last frame sent: the achieved rate
    code = 0
    try:
        for i in itertools.count() if total is None else range(total):
            if args.drop and (i + 1) % args.drop == 0:
                skipped += 1
                continue
            deadline = t0 + i * period  # absolute schedule: a late frame does not delay the next ones
            now = time.monotonic()
            if deadline > now:
                time.sleep(deadline - now)
                now = time.monotonic()
            late += int(now - deadline > period / 2)
            sender.send(movie[i % len(movie)], i, time.monotonic_ns(), i % args.planes,
                        column_major=args.column_major)
            sent += 1
            first, last = (first if sent > 1 else (i, now)), (i, now)
            if now >= next_progress + PROGRESS_S:
                next_progress = now
                print(f"bcirig send: {sent} frames sent, {skipped} skipped, {late} late", file=sys.stderr)
    except KeyboardInterrupt:
        print("bcirig send: interrupted", file=sys.stderr)
    except OSError as exc:  # the rig closed the connection or went away
        print(f"bcirig send: lost the rig at frame {i}: {exc}", file=sys.stderr)
        code = 1
    finally:
        sender.close()
    rate = (last[0] - first[0]) / (last[1] - first[1]) if last[1] > first[1] else 0.0
    print(f"bcirig send: {sent} frames sent, {skipped} skipped, {late} late, {rate:.1f} Hz achieved "
          f"(target {args.rate:g}) to {sender.address} ({args.framing})")
    return code


def keys_parser() -> argparse.ArgumentParser:
    """``bcirig keys``'s arguments."""
    p = argparse.ArgumentParser(prog="bcirig keys", description="Make a CurveZMQ key pair (NAME.key, "
                                "NAME.key_secret) for the rig or a sender.")
    p.add_argument("name")
    p.add_argument("--dir", default=".", help="folder to write them to (default: here)")
    return p


def keys_main(argv: list[str]) -> int:
    """``bcirig keys NAME``: write a key pair; never overwrites."""
    args = keys_parser().parse_args(argv)
    folder = Path(args.dir)
    public, secret = folder / f"{args.name}.key", folder / f"{args.name}.key_secret"
    existing = [str(p) for p in (public, secret) if p.exists()]
    if existing:
        print(f"bcirig keys: {' and '.join(existing)} already exist; not overwritten (choose another NAME)",
              file=sys.stderr)
        return 1
    folder.mkdir(parents=True, exist_ok=True)
    zmq.auth.create_certificates(folder, args.name)
    secret.chmod(0o600)  # only its owner may read a secret key
    print(f"public key  {public}\n"
          f"    a sender's: copy it to the rig and list it in the rig file's source.network.allowed_keys\n"
          f"    the rig's:  copy it to each sender PC, for `bcirig send --server-key`\n"
          f"secret key  {secret}\n"
          f"    stays on this PC, private: the rig file's source.network.secret_key, or the sender's "
          f"`bcirig send --client-key`")
    return 0
