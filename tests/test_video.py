"""Video inputs end to end through the CLI: timing, size, audio, clip-wide range, raw exports,
damaged and non-video files, resume, atomic outputs. Small generated clips, CPU, random weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from depthcli import outputs
from depthcli.cli import main
from depthcli.errors import InputError
from depthcli.io import video_encode
from depthcli.outputs import render
from depthcli.outputs.clipstats import ClipStats
from depthcli.outputs.stacks import RawStack
from depthcli.runs import video
from depthcli.runs.options import parse_norm

NTSC = Fraction(30000, 1001)


# ------------------------------------------------------------------------------ helpers

def textured(h: int, w: int, i: int, seed: int = 0) -> np.ndarray:
    """A smooth moving pattern (BGR uint8); random noise would make depth degenerate."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ch = [np.sin(xx / (6 + c) + yy / (9 + 2 * c) + i / 4 + seed) for c in range(3)]
    return ((np.stack(ch, -1) * 0.5 + 0.5) * 255).astype(np.uint8)


def make_video(path: Path, n: int = 12, w: int = 64, h: int = 48, *, rate: Fraction = NTSC,
               frame: Callable[[int], np.ndarray] | None = None, pts: list[int] | None = None,
               audio: str | None = None, fmt: str | None = None, pix_fmt: str = "yuv420p",
               rotate: int | None = None, faststart: bool = False, gop: int | None = None) -> Path:
    frame = frame or (lambda i: textured(h, w, i))
    opts = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=fmt, options=opts) as c:
        # the test clips too: uncapped, x264's AVX-512 code gave the ramp clip other pixels
        # from run to run, and with them other depth
        vs = c.add_stream("libx264", rate=rate, options=video_encode.x264_deterministic())
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        if gop:
            vs.codec_context.gop_size = gop
        if pts is not None:
            vs.time_base = vs.codec_context.time_base = Fraction(1, 30000)
        if rotate is not None:
            vs.set_display_rotation(rotate)
        ast = None
        if audio:
            ast = c.add_stream(audio, rate=48000)
            ast.layout = "stereo"
        sample = 0
        for i in range(n):
            f = av.VideoFrame.from_ndarray(frame(i), format="bgr24")
            f.pts = pts[i] if pts is not None else i
            if pts is not None:
                f.time_base = Fraction(1, 30000)
            for p in vs.encode(f):
                c.mux(p)
            while ast is not None and sample < (i + 1) * 48000 / rate:
                tone = (np.sin(np.arange(sample, sample + 1024) / 8) * 0.2).astype(np.float32)
                fmt_a = "fltp" if audio == "aac" else "s16"
                data = np.stack([tone, tone]) if fmt_a == "fltp" else \
                    (np.stack([tone, tone]).T.reshape(1, -1) * 32767).astype(np.int16)
                af = av.AudioFrame.from_ndarray(data, format=fmt_a, layout="stereo")
                af.sample_rate, af.pts = 48000, sample
                for p in ast.encode(af):
                    c.mux(p)
                sample += 1024
        for p in vs.encode():
            c.mux(p)
        if ast is not None:
            for p in ast.encode():
                c.mux(p)
    return path


def probe(path: Path) -> dict:
    """Frame count, size, rate, frame times, gray frames and audio codec of a video file."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = list(c.decode(vs))
        return {
            "n": len(frames), "w": vs.codec_context.width, "h": vs.codec_context.height,
            "rate": vs.average_rate, "codec": vs.codec_context.name,
            "pix_fmt": vs.codec_context.pix_fmt,
            "times": [f.pts * f.time_base for f in frames],
            "gray": [f.to_ndarray(format="gray") for f in frames],
            "bgr": [f.to_ndarray(format="bgr24") for f in frames],
            "audio": c.streams.audio[0].codec_context.name if c.streams.audio else None,
        }


def audio_packets(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(audio=0) if p.size)


def run_cli(inputs: list[Path], out: Path, ckpt: Path, *extra: str):
    args = ["predict", *map(str, inputs), "-o", str(out), "--model", "da2-tiny-test",
            "--weights", str(ckpt), "--input-size", "70", "--device", "cpu", "-q", *extra]
    return CliRunner().invoke(main, args)


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(".") and p.name != ".depthcli-outputs"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(3)
    tex = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
    base = textured(48, 64, 0)

    def ramp(i: int) -> np.ndarray:  # the same picture, brighter each frame
        return (base.astype(np.float64) * (0.15 + 0.85 * i / 7)).astype(np.uint8)

    return {
        "ntsc": make_video(d / "ntsc.mp4", 12, audio="aac"),
        "vfr": make_video(d / "vfr.mp4", 5, pts=[0, 1001, 3003, 3500, 7000]),
        "ramp": make_video(d / "ramp.mp4", 8, frame=ramp, rate=Fraction(25)),
        "odd": make_video(d / "odd.mkv", 5, 63, 47, fmt="matroska", pix_fmt="yuv444p",
                          audio="pcm_s16le"),
        "rot": make_video(d / "rot.mp4", 3, rotate=90),
        "trunc": _truncated(d, tex),
    }


def _truncated(d: Path, tex: np.ndarray) -> Path:
    full = make_video(d / "full.mp4", 16, frame=lambda i: np.ascontiguousarray(
        tex[i:i + 48, 2 * i:2 * i + 64]), faststart=True, gop=4)
    data = full.read_bytes()
    cut = d / "trunc.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    return cut


# --------------------------------------------------------------------------------- tests

def test_depth_video_keeps_timing_size_audio_and_resumes(clips, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    res = run_cli([clips["ntsc"], clips["vfr"]], out, tiny_ckpt, "--json")
    assert res.exit_code == 0, res.output + res.stderr
    summary = json.loads(res.stdout)
    assert summary["frames"] == 17 and summary["written"] == 2
    assert summary["frames_per_s"] == pytest.approx(17 / summary["seconds"], rel=1e-2)
    for key, n in (("ntsc", 12), ("vfr", 5)):
        src, dst = probe(clips[key]), probe(out / f"{key}.mp4")
        assert dst["codec"] == "h264" and dst["pix_fmt"] == "yuv420p"
        assert dst["n"] == src["n"] == n
        assert (dst["w"], dst["h"]) == (src["w"], src["h"]) == (64, 48)
        assert dst["times"] == src["times"]  # frame for frame, VFR included
    ntsc = probe(out / "ntsc.mp4")
    assert ntsc["rate"] == NTSC and isinstance(ntsc["rate"], Fraction)
    assert ntsc["audio"] == "aac"
    assert audio_packets(out / "ntsc.mp4") == audio_packets(clips["ntsc"])  # copied, not cut
    assert probe(out / "vfr.mp4")["audio"] is None
    assert not leftovers(out)

    mtime = (out / "ntsc.mp4").stat().st_mtime_ns
    res = run_cli([clips["ntsc"], clips["vfr"]], out, tiny_ckpt, "--skip-existing", "--json")
    assert res.exit_code == 0, res.output + res.stderr
    assert '"skipped": 2' in res.stdout
    assert (out / "ntsc.mp4").stat().st_mtime_ns == mtime


def _expected_gray(depth: np.ndarray, vrange: tuple[float, float]) -> np.ndarray:
    return render.to_uint8(render.nearness(depth, vrange, near_is_large=True))


def test_clip_wide_range_gray_and_npy_match_inference(clips, tiny_ckpt, tmp_path):
    out = tmp_path / "clip"
    res = run_cli([clips["ramp"]], out, tiny_ckpt, "-f", "gray,npy")
    assert res.exit_code == 0, res.output + res.stderr
    depth = np.load(out / "ramp.npy", mmap_mode="r")
    assert depth.shape == (8, 48, 64) and depth.dtype == np.float32
    gray = probe(out / "ramp_gray.mp4")["gray"]
    assert len(gray) == 8
    lo, hi = float(depth.min()), float(depth.max())
    assert hi > lo
    means = [float(g.mean()) for g in gray]
    assert max(means) - min(means) > 5, means  # brightness follows depth across frames
    for i in range(8):  # every frame rendered with the one clip range (yuv420p/crf loss only)
        exp = _expected_gray(np.asarray(depth[i]), (lo, hi))
        assert np.abs(gray[i].astype(float) - exp).mean() < 3, i
    spans = [float(g.max()) - float(g.min()) for g in gray]
    assert min(spans) < 200  # some frame does not use the whole scale: not per-frame min-max

    # npy = model output at the source size, as the image API computes it
    from depthcli.engine.core import DepthEngine

    est = DepthEngine.from_name("da2-tiny-test", weights=tiny_ckpt, device="cpu", input_size=70)
    src = probe(clips["ramp"])["bgr"]
    tol = 1e-5 * (hi - lo)
    for i in (0, 7):
        assert np.abs(est.infer(src[i]) - depth[i]).max() <= tol

    # --video-norm frame: every frame stretched over the whole scale
    out2 = tmp_path / "frame"
    res = run_cli([clips["ramp"]], out2, tiny_ckpt, "-f", "gray", "--video-norm", "frame")
    assert res.exit_code == 0, res.output + res.stderr
    gray2 = probe(out2 / "ramp_gray.mp4")["gray"]
    for i, g in enumerate(gray2):
        d = np.asarray(depth[i])
        exp = _expected_gray(d, (float(d.min()), float(d.max())))
        assert np.abs(g.astype(float) - exp).mean() < 5, i
        assert g.min() <= 10 and g.max() >= 245, i


def test_odd_size_rotation_sequences_side_and_audio_reencode(clips, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    res = run_cli([clips["odd"], clips["rot"]], out, tiny_ckpt,
                  "-f", "color,side,png16,npy")
    assert res.exit_code == 0, res.output + res.stderr
    src = probe(clips["odd"])
    assert (src["w"], src["h"]) == (63, 47)
    color = probe(out / "odd.mp4")
    # odd sizes are kept exactly (H.264 High 4:4:4; 4:2:0 cannot encode them)
    assert (color["w"], color["h"]) == (63, 47) and color["n"] == 5
    with av.open(str(out / "odd.mp4")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"
    assert color["times"] == src["times"]
    assert color["audio"] == "aac"  # pcm cannot go in a browser mp4: re-encoded
    side = probe(out / "odd_side.mp4")
    assert (side["w"], side["h"]) == (63 * 2 + 50, 47) and side["n"] == 5
    # the left half is the input frame (re-decoded in pass 2), the gap is white
    assert np.abs(side["bgr"][2][:47, :62].astype(int) - src["bgr"][2][:, :62]).mean() < 12
    assert side["bgr"][2][:, 70:105].min() > 220
    pngs = sorted((out / "odd_png16").iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(5)]
    img = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.shape == (47, 63)
    assert np.load(out / "odd.npy", mmap_mode="r").shape == (5, 47, 63)

    # display rotation 90: processed upright, written at the display size without rotation
    rot = probe(out / "rot.mp4")
    assert (rot["w"], rot["h"]) == (48, 64) and rot["n"] == 3
    assert np.load(out / "rot.npy", mmap_mode="r").shape == (3, 64, 48)
    with av.open(str(out / "rot.mp4")) as c:
        assert next(c.decode(video=0)).rotation == 0
    assert not leftovers(out)


def test_truncated_video_keeps_decodable_frames(clips, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    res = run_cli([clips["trunc"]], out, tiny_ckpt)
    assert res.exit_code == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(clips["trunc"]) in lines[0] and "frame" in lines[0]
    assert "Traceback" not in res.output + res.stderr
    dst = probe(out / "trunc.mp4")
    assert dst["n"] >= 1
    full = probe(clips["trunc"].parent / "full.mp4")
    assert dst["n"] < full["n"]
    assert dst["times"] == full["times"][: dst["n"]]
    assert not leftovers(out)


def test_not_a_video_and_no_video_stream(tiny_ckpt, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    sound = tmp_path / "sound.mp4"
    with av.open(str(sound), "w") as c:
        a = c.add_stream("aac", rate=48000)
        for k in range(5):
            f = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp",
                                           layout="stereo")
            f.sample_rate, f.pts = 48000, k * 1024
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    empty = tmp_path / "empty.mp4"  # a video track without a single frame
    with av.open(str(empty), "w") as c:
        vs = c.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    out = tmp_path / "out"
    res = run_cli([bad, sound, empty], out, tiny_ckpt)
    assert res.exit_code == 1
    assert "Traceback" not in res.output + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 3
    assert errors[0].startswith(f"error: {bad}: not a readable video")
    assert errors[1] == f"error: {sound}: no video stream"
    assert errors[2] in (f"error: {empty}: no video stream",
                         f"error: {empty}: no decodable video frames")
    assert not out.exists() or not any(out.rglob("*"))


def test_failure_mid_video_leaves_no_output(clips, tiny_ckpt, tmp_path, monkeypatch):
    from depthcli.engine.core import DepthEngine
    from depthcli.runs.options import PredictOptions

    est = DepthEngine.from_name("da2-tiny-test", weights=tiny_ckpt, device="cpu", input_size=70)
    calls = {"n": 0}
    real = est.forward_batch

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("device lost")
        return real(batch)

    monkeypatch.setattr(est, "forward_batch", flaky)
    out = tmp_path / "out"
    opts = PredictOptions(inputs=(str(clips["ntsc"]),), out_dir=out)
    opts.output = type(opts.output)(("color", "npy", "pfm"))
    with pytest.raises(InputError, match=r"inference failed at frame 2: device lost"):
        video.predict_video(clips["ntsc"], out / "ntsc", est, opts)
    assert not any(out.rglob("*")) if out.exists() else True


def test_rollercoaster_sample(samples_dir, tiny_ckpt, tmp_path):
    src = samples_dir / "videos" / "davis_rollercoaster.mp4"
    if not src.is_file():
        pytest.skip("davis_rollercoaster.mp4 is absent")
    out = tmp_path / "out"
    res = run_cli([src], out, tiny_ckpt, "-b", "4")
    assert res.exit_code == 0, res.output + res.stderr
    a, b = probe(src), probe(out / "davis_rollercoaster.mp4")
    assert b["n"] == a["n"] == 70
    assert (b["w"], b["h"]) == (a["w"], a["h"]) == (960, 540)
    assert b["rate"] == a["rate"] == 24
    assert b["times"] == a["times"]


# ---------------------------------------------------------------------------- unit level

def test_output_names():
    base = Path("OUT/sub/clip")
    assert outputs.video_paths(base, ["color"]) == {"color": Path("OUT/sub/clip.mp4")}
    p = outputs.video_paths(base, ["gray", "side", "npy", "png16", "exr", "pfm", "ply"])
    assert p == {"gray": Path("OUT/sub/clip_gray.mp4"), "side": Path("OUT/sub/clip_side.mp4"),
                 "npy": Path("OUT/sub/clip.npy"), "png16": Path("OUT/sub/clip_png16"),
                 "exr": Path("OUT/sub/clip_exr"), "pfm": Path("OUT/sub/clip_pfm")}


def test_parse_norm():
    assert parse_norm("clip") == "clip"
    assert parse_norm(None) == "clip"
    assert parse_norm("Frame") == "frame"
    assert parse_norm("0.5,3") == (0.5, 3.0)
    for bad in ("2,1", "x", "1,2,3"):
        with pytest.raises(ValueError):
            parse_norm(bad)


def test_raw_stack_is_a_npy_of_unknown_length(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.normal(size=(5, 7)).astype(np.float32) for _ in range(11)]
    s = RawStack(tmp_path / "x.npy", (5, 7), np.float32)
    for f in frames:
        s.append(f)
    s.close()
    arr = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert arr.shape == (11, 5, 7) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, np.stack(frames))
    read = s.reader()
    np.testing.assert_array_equal(read(4), frames[4])
    read.close()


def test_clip_stats_percentiles_cover_all_frames():
    import torch

    st = ClipStats(render.RenderOptions(mode="percentile", percentiles=(0.0, 100.0)))
    for k in range(300):
        st.update(torch.full((64, 64), float(k)))
    lo, hi = st.value_range()
    assert lo == 0.0 and hi == 299.0
    st2 = ClipStats(render.RenderOptions())
    st2.update(torch.tensor([[1.0, float("nan")], [5.0, -2.0]]))
    assert st2.value_range() == (-2.0, 5.0)


@pytest.mark.parametrize("exc", [AttributeError("no codec context"), TypeError("bad rate"),
                                 ValueError("bad layout")])
def test_probe_failure_is_one_clean_line(exc, tmp_path, monkeypatch):
    """A probe that PyAV makes fail with AttributeError/TypeError/ValueError is 'not a readable
    video (reason)', both from `probe` and as the run's one error line (not a NameError)."""
    from depthcli.io import video_decode as vio
    from depthcli.runs.local import run_predict
    from depthcli.runs.models import RunModels
    from depthcli.runs.options import PredictOptions

    def broken(path, max_pixels=None):
        raise exc

    monkeypatch.setattr(vio, "_probe", broken)
    src = make_video(tmp_path / "clip.mp4", n=2)
    with pytest.raises(InputError) as info:
        vio.probe(src)
    assert str(info.value) == f"{src}: not a readable video ({exc})"
    lines: list[str] = []
    models = RunModels(lambda name: pytest.fail("the model must not be needed"), "da2-tiny-test")
    models._cache["da2-tiny-test"] = None  # never used: the probe fails first
    opts = PredictOptions(inputs=(str(src),), out_dir=tmp_path / "out")
    summary = run_predict(opts, models, report=lines.append)
    assert lines == [f"error: {src}: not a readable video ({exc})"]
    assert summary.failed == 1 and summary.written == 0


def test_depth_video_encoding_is_deterministic(tmp_path, monkeypatch) -> None:
    """The same frames make the same bytes every time: what resumed and segmented depth videos
    rely on. These 8 gray frames (a tiny VDA's depth) came out of libx264's AVX-512 routines as
    3 different streams in 40 encodes on an AVX-512 EPYC; `io.video_encode` caps them at AVX2."""
    from depthcli.io.video_decode import VideoInfo

    frames = np.load(Path(__file__).parent / "data" / "x264-nondeterministic.npz")["gray"]
    info = VideoInfo(tmp_path / "src", 48, 32, Fraction(25), Fraction(1, 25), 8, 0, None, None)

    def encode(i: int) -> bytes:
        w = video_encode.VideoWriter(tmp_path / f"{i}.mp4", 48, 32, info, audio=False)
        for k, f in enumerate(frames):
            w.write(f, k)
        w.close()
        return (tmp_path / f"{i}.mp4").read_bytes()

    streams = {encode(i) for i in range(30)}
    assert len(streams) == 1
    opts = video_encode.x264_options(18, "fast")
    assert ("x264-params" in opts) == video_encode.has_avx512()
