"""Seeded mutation fuzzing of `depthcli predict` on damaged images and videos.

Why: depthcli reads folders other people made. A damaged or hostile file must cost one error
line naming it, never the run: no crash (signal, uncaught exception), no hang, every bad input
named on stderr with a reason, every good input written.

The corpus starts from small valid JPEG, PNG, WebP (lossy VP8 and lossless VP8L), TIFF and BMP
images and H.264 mp4 / mkv videos made here, then applies one seeded mutation to each copy:
bit flips, truncation, overwritten or duplicated byte runs, or extreme header fields (PNG IHDR,
JPEG SOF, BMP info header, TIFF IFD0 size tags, WebP VP8/VP8L frame size, mp4 `tkhd`/`avc1`,
mkv PixelWidth/PixelHeight) set to 0, 1, 65535, 2^31-1, 2^32-1 and the like. A few copies stay
unmutated: these controls must be written. Same seed, same corpus (file names say the
mutation: `i00012_png_header.png`).

Run (builds the corpus under OUTDIR, runs predict in a subprocess with a timeout, checks)::

    python -m tools.fuzz OUTDIR --images 2000 --videos 200 --seed 0

Runs use `--input-size 28 --threads 1 --max-pixels 250000` (see FUZZ_MAX_PIXELS).
Without `--weights` a random-weight ViT-S checkpoint is made in OUTDIR (outputs are
meaningless; the point is the input path). A crash or hang is bisected down to the file(s)
that cause it (by `.txt` lists of halves). Exit status 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

IMAGE_KINDS = ("jpg", "png", "webp", "tif", "bmp")
VIDEO_KINDS = ("mp4", "mkv")
MUTATIONS = ("none", "bitflip", "truncate", "overwrite", "duplicate", "header")
EXTREMES_32 = (0, 1, 46341, 65535, 65536, 100_000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
EXTREMES_16 = (0, 1, 16383, 30000, 65500, 65535)
# Header mutations make valid, decodable 32 x 65500 JPEGs: legal inputs whose cost is compute
# (8k tokens at --input-size 28), not a robustness question. The fuzz runs cap them with
# --max-pixels, which also exercises the header-size refusal on every format.
FUZZ_MAX_PIXELS = 250_000


@dataclass(frozen=True)
class Sample:
    """One corpus file and how it was made."""

    path: Path
    kind: str  # jpg, png, ..., mp4, mkv
    mutation: str

    @property
    def is_video(self) -> bool:
        return self.kind in VIDEO_KINDS


# ----------------------------------------------------------------------------- seed files

def _picture(rng: random.Random, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    a = rng.uniform(3, 12)
    ch = [np.sin(xx / (a + c) + yy / (a + 2 * c) + rng.uniform(0, 6)) for c in range(3)]
    return ((np.stack(ch, -1) * 0.5 + 0.5) * 255).astype(np.uint8)


def seed_image(kind: str, rng: random.Random) -> bytes:
    """A small valid image of `kind` (size, channels and codec options drawn from `rng`)."""
    import cv2

    h, w = rng.choice([(32, 48), (17, 23), (64, 40), (8, 8), (1, 5)])
    img = _picture(rng, h, w)
    variant = rng.randrange(3)
    if variant == 1:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif variant == 2 and kind in ("png", "webp", "tif"):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    params: list[int] = []
    if kind == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, rng.choice([60, 90, 101])]  # 101: lossless VP8L
    elif kind == "jpg" and rng.random() < 0.3:
        params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    ok, buf = cv2.imencode("." + kind, img, params)
    if not ok:
        raise RuntimeError(f"cannot encode a seed {kind}")
    return buf.tobytes()


def seed_video(kind: str, path: Path, rng: random.Random) -> None:
    """A short valid H.264 video (mp4 or mkv), a few frames, sometimes with AAC audio."""
    import av

    w, h = rng.choice([(48, 32), (32, 32), (64, 48)])
    n = rng.randint(3, 10)
    with av.open(str(path), "w", format="matroska" if kind == "mkv" else "mp4",
                 options={"fflags": "+bitexact"}) as c:  # no random ids or dates
        vs = c.add_stream("libx264", rate=Fraction(rng.choice([25, 30])))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.gop_size = rng.choice([1, 4, 12])
        for i in range(n):
            f = av.VideoFrame.from_ndarray(_picture(rng, h, w), format="bgr24")
            f.pts = i
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)


# ------------------------------------------------------------------------------ mutations

def _bitflip(data: bytearray, rng: random.Random) -> None:
    head = rng.random() < 0.5  # half of the flips hit the first 512 bytes (headers)
    for _ in range(rng.randint(1, 32)):
        i = rng.randrange(min(len(data), 512) if head else len(data))
        data[i] ^= 1 << rng.randrange(8)


def _truncate(data: bytearray, rng: random.Random) -> None:
    del data[rng.randrange(1, max(2, len(data))):]


def _overwrite(data: bytearray, rng: random.Random) -> None:
    i = rng.randrange(len(data))
    n = rng.randint(1, 64)
    fill = rng.choice([b"\x00", b"\xff", None])
    data[i:i + n] = (fill * n) if fill else bytes(rng.randrange(256) for _ in range(n))


def _duplicate(data: bytearray, rng: random.Random) -> None:
    i = rng.randrange(len(data))
    j = rng.randrange(len(data))
    data[j:j] = data[i:i + rng.randint(1, 256)]


def _png_header(data: bytearray, rng: random.Random) -> bool:
    if data[12:16] != b"IHDR":
        return False
    struct.pack_into(">I", data, 16 + 4 * rng.randrange(2), rng.choice(EXTREMES_32))
    if rng.random() < 0.7:  # a valid CRC, so decoders do not stop at the checksum
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return True


def _jpeg_header(data: bytearray, rng: random.Random) -> bool:
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        i = data.find(marker)
        if i >= 0 and i + 9 <= len(data):
            struct.pack_into(">H", data, i + 5 + 2 * rng.randrange(2), rng.choice(EXTREMES_16))
            return True
    return False


def _bmp_header(data: bytearray, rng: random.Random) -> bool:
    if data[:2] != b"BM" or len(data) < 30:
        return False
    field_at = rng.choice([18, 22, 28, 10])  # width, height, bits per pixel, pixel data offset
    if field_at == 28:
        struct.pack_into("<H", data, 28, rng.choice([0, 1, 7, 33, 64, 65535]))
    else:
        v = rng.choice(EXTREMES_32 + (0x80000001,))
        struct.pack_into("<I", data, field_at, v)
    return True


def _tiff_header(data: bytearray, rng: random.Random) -> bool:
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return False
    e = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(e + "I", data, 4)[0]
    if ifd + 2 > len(data):
        return False
    n = struct.unpack_from(e + "H", data, ifd)[0]
    targets = []
    for k in range(n):
        at = ifd + 2 + 12 * k
        if at + 12 > len(data):
            break
        tag, typ = struct.unpack_from(e + "HH", data, at)
        if tag in (256, 257, 258, 277, 278, 279, 273):  # sizes, depth, samples, strips
            targets.append((at, typ))
    if not targets:
        return False
    at, typ = rng.choice(targets)
    if typ == 3:  # SHORT
        struct.pack_into(e + "H", data, at + 8, rng.choice(EXTREMES_16))
    else:
        struct.pack_into(e + "I", data, at + 8, rng.choice(EXTREMES_32))
    return True


def _webp_header(data: bytearray, rng: random.Random) -> bool:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return False
    chunk = bytes(data[12:16])
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        struct.pack_into("<H", data, 26 + 2 * rng.randrange(2), rng.choice(EXTREMES_16))
    elif chunk == b"VP8L" and data[20] == 0x2F:
        bits = struct.unpack_from("<I", data, 21)[0]
        w1, h1 = rng.choice([(0x3FFF, 0x3FFF), (0x3FFF, 0), (0, 0x3FFF), (0, 0)])
        bits = (bits & ~0xFFFFFFF) | w1 | (h1 << 14)
        struct.pack_into("<I", data, 21, bits)
    elif chunk == b"VP8X":
        data[24:27] = rng.choice([b"\xff\xff\xff", b"\x00\x00\x00"])
        data[27:30] = rng.choice([b"\xff\xff\xff", b"\x00\x00\x00"])
    else:
        return False
    return True


def _mp4_header(data: bytearray, rng: random.Random) -> bool:
    spots = []
    i = data.find(b"tkhd")
    if i >= 4:
        size = struct.unpack_from(">I", data, i - 4)[0]
        end = i - 4 + size
        if 8 <= size and end <= len(data):
            spots += [("tkhd", end - 8), ("tkhd", end - 4)]
    j = data.find(b"avc1")
    if j >= 0 and j + 32 <= len(data):
        spots += [("avc1", j + 4 + 24), ("avc1", j + 4 + 26)]
    if not spots:
        return False
    what, at = rng.choice(spots)
    if what == "tkhd":  # 16.16 fixed point display size
        struct.pack_into(">I", data, at, rng.choice(EXTREMES_32))
    else:
        struct.pack_into(">H", data, at, rng.choice(EXTREMES_16))
    return True


def _mkv_header(data: bytearray, rng: random.Random) -> bool:
    spots = []
    for elem in (b"\xb0", b"\xba"):  # PixelWidth, PixelHeight (inside the Video element)
        start = data.find(b"\xe0")  # Video master element
        k = data.find(elem, max(start, 0))
        while 0 <= k < len(data) - 3:
            size = data[k + 1]
            if size in (0x81, 0x82):
                spots.append((k + 2, size & 0x7F))
                break
            k = data.find(elem, k + 1)
    if not spots:
        return False
    at, n = rng.choice(spots)
    data[at:at + n] = rng.choice([b"\xff" * n, b"\x00" * n])
    return True


HEADER_MUTATORS: dict[str, Callable[[bytearray, random.Random], bool]] = {
    "png": _png_header, "jpg": _jpeg_header, "bmp": _bmp_header, "tif": _tiff_header,
    "webp": _webp_header, "mp4": _mp4_header, "mkv": _mkv_header,
}


def mutate(data: bytes, kind: str, mutation: str, rng: random.Random) -> bytes:
    """`data` with one seeded `mutation` applied (header falls back on bit flips)."""
    buf = bytearray(data)
    if mutation == "none" or not buf:
        return bytes(buf)
    if mutation == "header":
        if not HEADER_MUTATORS[kind](buf, rng):
            _bitflip(buf, rng)
    else:
        {"bitflip": _bitflip, "truncate": _truncate, "overwrite": _overwrite,
         "duplicate": _duplicate}[mutation](buf, rng)
    return bytes(buf)


def _pick_mutation(rng: random.Random, index: int) -> str:
    if index % 25 == 0:  # controls: one in 25, and the first of each kind
        return "none"
    return rng.choice(MUTATIONS[1:] + ("header",))  # header fields twice as likely


def build_corpus(root: Path, images: int, videos: int, seed: int = 0) -> list[Sample]:
    """Write the seeded corpus into `root` (created); same arguments, same bytes."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    samples: list[Sample] = []
    seeds: dict[str, list[bytes]] = {}
    for k in IMAGE_KINDS:
        seeds[k] = [seed_image(k, rng) for _ in range(4)]
    tmp = root / ".seeds"
    tmp.mkdir(exist_ok=True)
    for k in VIDEO_KINDS:
        seeds[k] = []
        for i in range(3):
            p = tmp / f"seed{i}.{k}"
            seed_video(k, p, rng)
            seeds[k].append(p.read_bytes())
            p.unlink()
    tmp.rmdir()
    for total, kinds, prefix in ((images, IMAGE_KINDS, "i"), (videos, VIDEO_KINDS, "v")):
        for i in range(total):
            kind = kinds[i % len(kinds)]
            mutation = "none" if i < len(kinds) else _pick_mutation(rng, i)
            data = mutate(rng.choice(seeds[kind]), kind, mutation, rng)
            path = root / f"{prefix}{i:05d}_{kind}_{mutation}.{kind}"
            path.write_bytes(data)
            samples.append(Sample(path, kind, mutation))
    return samples


# ---------------------------------------------------------------------------------- runs

@dataclass
class FuzzResult:
    """What one checked run found; `ok` when every check holds."""

    images: int = 0
    videos: int = 0
    written: int = 0
    named_failures: int = 0
    seconds: float = 0.0
    returncode: int | None = None
    problems: list[str] = field(default_factory=list)
    culprits: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {"images": self.images, "videos": self.videos, "written": self.written,
                "named_failures": self.named_failures, "seconds": round(self.seconds, 1),
                "returncode": self.returncode, "problems": self.problems,
                "culprits": self.culprits, "ok": self.ok}


def random_checkpoint(path: Path, seed: int = 0, model: str = "da2-small") -> Path:
    """A checkpoint of `model` with random weights (internal layout), for exercising the I/O."""
    import torch

    from depthcli.models import DepthAnything, get_spec

    torch.manual_seed(seed)
    torch.save(DepthAnything(get_spec(model)).state_dict(), path)
    return path


def predict_command(inputs: list[str], out: Path, weights: Path, input_size: int = 28,
                    extra: tuple[str, ...] = ()) -> list[str]:
    """The fuzz run's command line; `extra` flags come last (a `--model` there wins)."""
    return [sys.executable, "-m", "depthcli", "predict", *inputs, "-o", str(out),
            "--model", "da2-small", "--weights", str(weights), "--input-size", str(input_size),
            "--device", "cpu", "-f", "color", "-q", "--json", "--threads", "1",
            "--max-pixels", str(FUZZ_MAX_PIXELS), *extra]


def _run(inputs: list[str], out: Path, weights: Path, timeout: float, input_size: int,
         extra: tuple[str, ...]) -> tuple[int | None, str, str]:
    """(returncode or None on timeout, stdout, stderr)."""
    cmd = predict_command(inputs, out, weights, input_size, extra)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    except subprocess.TimeoutExpired as exc:
        def text(b: object) -> str:
            return b.decode(errors="replace") if isinstance(b, bytes) else str(b or "")
        return None, text(exc.stdout), text(exc.stderr)
    return r.returncode, r.stdout, r.stderr


def _bad_run(rc: int | None, stderr: str) -> str | None:
    if rc is None:
        return "hang (timeout)"
    if rc not in (0, 1):
        return f"exit status {rc}" + (" (signal)" if rc < 0 else "")
    if "Traceback" in stderr or "Fatal Python error" in stderr:
        return "traceback on stderr"
    return None


def _bisect(samples: list[Sample], work: Path, weights: Path, timeout: float,
            input_size: int, extra: tuple[str, ...], depth: int = 0) -> list[str]:
    """The files that alone make a run crash or hang (lists of halves, recursively)."""
    if len(samples) == 1:
        return [f"{samples[0].path.name}"]
    half = len(samples) // 2
    work.mkdir(parents=True, exist_ok=True)
    found: list[str] = []
    for k, part in enumerate((samples[:half], samples[half:])):
        lst = work / f"bisect_{depth}_{k}_{len(part)}.txt"
        lst.write_text("".join(f"{s.path}\n" for s in part))
        rc, _, err = _run([str(lst)], work / f"bisect_out_{depth}_{k}", weights, timeout,
                          input_size, extra)
        if _bad_run(rc, err) is not None:
            found += _bisect(part, work, weights, timeout, input_size, extra, depth + 1)
    return found


_SUMMARY_LINE = re.compile(r"^(written \d+, |\d+ input\(s\) failed$)")


def check_run(samples: list[Sample], corpus: Path, out: Path, weights: Path, *,
              timeout: float | None = None, input_size: int = 28,
              extra: tuple[str, ...] = (), bisect: bool = True,
              model: str = "da2-small") -> FuzzResult:
    """Run predict on `corpus` once and check every sample (see the module docstring).

    `model` names the architecture of `weights` (any registry name, test configurations too).
    """
    extra = (*extra, "--model", model)  # every run (bisection too) names the architecture
    import cv2

    res = FuzzResult(images=sum(not s.is_video for s in samples),
                     videos=sum(s.is_video for s in samples))
    if timeout is None:
        timeout = 120 + 0.5 * res.images + 4 * res.videos
    t0 = time.perf_counter()
    rc, stdout, stderr = _run([str(corpus)], out, weights, timeout, input_size, extra)
    res.seconds = time.perf_counter() - t0
    res.returncode = rc
    bad = _bad_run(rc, stderr)
    if bad is not None:
        res.problems.append(f"run: {bad}: {stderr.strip().splitlines()[-3:]}")
        if bisect:
            res.culprits = _bisect(samples, out.parent / (out.name + "_bisect"), weights,
                                   timeout, input_size, extra)
        return res
    errors: dict[str, str] = {}
    for line in stderr.splitlines():
        if line.startswith("error: "):
            path, _, reason = line[len("error: "):].partition(": ")
            if path in errors:
                res.problems.append(f"{Path(path).name}: named more than once")
            errors.setdefault(path, reason.strip())
        elif line.strip() and not _SUMMARY_LINE.match(line):
            # a C library's own message, or one of ours split by it: each bad file costs
            # exactly its one `error: PATH: reason` line
            res.problems.append(f"stray line on stderr: {line[:200]!r}")
    for s in samples:
        name = s.path.stem + (".mp4" if s.is_video else ".png")
        dst = out / name
        named = errors.get(str(s.path))
        reason = named or "not named on stderr"
        if dst.is_file():
            res.written += 1
            if s.is_video:
                if not _video_ok(dst):
                    res.problems.append(f"{s.path.name}: written video does not decode")
            elif cv2.imread(str(dst)) is None:
                res.problems.append(f"{s.path.name}: written image does not decode")
        elif named:
            res.named_failures += 1
        else:
            res.problems.append(f"{s.path.name}: neither written nor named with a reason")
        if s.mutation == "none" and not dst.is_file():
            res.problems.append(f"{s.path.name}: unmutated control not written ({reason})")
    try:
        summary = json.loads(stdout.strip().splitlines()[-1])
        if summary["written"] != res.written:
            res.problems.append(f"summary says {summary['written']} written, found {res.written}")
    except (ValueError, IndexError, KeyError) as exc:
        res.problems.append(f"no JSON summary on stdout ({exc})")
    return res


def _video_ok(path: Path) -> bool:
    import av

    try:
        with av.open(str(path)) as c:
            return any(True for _ in c.decode(video=0))
    except Exception:  # noqa: BLE001 - any failure means "does not decode"
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.fuzz",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--input-size", type=int, default=28)
    ap.add_argument("--model", default="da2-small",
                    help="registry name of the --weights architecture (default da2-small)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds for the whole run")
    a = ap.parse_args(argv)
    a.outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    samples = build_corpus(a.outdir / "corpus", a.images, a.videos, a.seed)
    built = time.perf_counter() - t0
    weights = a.weights or random_checkpoint(a.outdir / f"random-{a.model}.pth", model=a.model)
    res = check_run(samples, a.outdir / "corpus", a.outdir / "out", weights,
                    timeout=a.timeout, input_size=a.input_size, model=a.model)
    report = {"corpus_seconds": round(built, 1), **res.as_dict()}
    print(json.dumps(report, indent=2))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
