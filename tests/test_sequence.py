"""Image sequences as clips (numbering, gaps, 16-bit and EXR frames, names, resume), the
lossless 16-bit depth video (`-f ffv1`) and scene cuts. Tiny models, tiny frames, CPU."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from test_video import audio_packets, make_video, probe, textured

from depthcli.cli import main
from depthcli.io import seqnames
from depthcli.io import sequence as seq
from depthcli.outputs.ffv1 import read_ffv1

H, W = 48, 64


def scene(i: int, kind: int) -> np.ndarray:
    """Two unrelated synthetic scenes (BGR uint8): a warm drifting pattern, a cold one."""
    t = textured(H, W, i, seed=3 * kind).astype(np.float64)
    tint = np.array([0.25, 0.6, 1.0]) if kind == 0 else np.array([1.0, 0.7, 0.2])
    return np.clip(t * tint + (0 if kind == 0 else 40), 0, 255).astype(np.uint8)


def write_frames(folder: Path, name: str, numbers: list[int], frame, dtype=np.uint8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(numbers):
        img = frame(k)
        if dtype == np.uint16:
            img = img.astype(np.uint16) * 256 + np.uint16(k * 37 % 256)  # low byte: lost
        assert cv2.imwrite(str(folder / name.format(n)), img)


def predict(args: list[str], ckpt: Path, model: str = "vda-tiny-test"):
    return CliRunner().invoke(main, ["predict", *args, "--model", model, "--weights", str(ckpt),
                                     "--input-size", "70", "--device", "cpu",
                                     "--precision", "fp32", "--backend", "torch", "--threads", "1",
                                     "-q", "--json"])


def test_patterns_and_gaps(tmp_path: Path) -> None:
    p = seq.parse_pattern("shot/plate.####.exr")
    assert p is not None and (p.prefix, p.suffix, p.width) == ("plate.", ".exr", 4)
    assert p.number_of("plate.1001.exr") == 1001 and p.number_of("plate.10000.exr") == 10000
    assert p.number_of("plate.001.exr") is None and p.number_of("plate.01001.exr") is None
    assert seqnames.item_rel(p, Path("a")) == Path("a/plate.exr")  # what the mapper takes
    q = seq.parse_pattern("plate_%04d.png")
    assert q is not None and (q.prefix, q.width) == ("plate_", 4)
    assert seq.parse_pattern("plate.%d.tif").width == 0  # type: ignore[union-attr]
    assert seq.parse_pattern("plate.png") is None and seq.parse_pattern("a#b#.png") is None
    assert seq.missing_ranges([1, 2, 5, 6, 9]) == [(3, 4), (7, 8)]
    write_frames(tmp_path, "a_{:03d}.png", [7, 8, 10], lambda k: scene(k, 0))
    (tmp_path / "notes.txt").write_text("x")
    pats = seq.folder_patterns(tmp_path)
    assert [(x.prefix, x.suffix, x.width) for x in pats] == [("a_", ".png", 3)]
    info = seq.probe(Path(pats[0].text()), None, Fraction(25))
    assert info.numbers == (7, 8, 10) and info.missing == [(9, 9)] and info.rate == 25
    frames = list(seq.iter_frames(info))
    assert [(f.index, f.pts, f.duration) for f in frames] == [(0, 0, 1), (1, 1, 2), (2, 3, 1)]
    write_frames(tmp_path / "b16", "b.{}.png", [5], lambda k: scene(k, 1), np.uint16)
    assert np.array_equal(seq.read_frame(tmp_path / "b16" / "b.5.png", 1 << 30), scene(0, 1))


def test_exr_frames_are_linear_light(tmp_path: Path) -> None:
    """A float EXR frame is taken as linear light: the sRGB curve back to the 8-bit frame;
    above 1.0 clips to white."""
    srgb = scene(0, 0)
    x = srgb.astype(np.float32) / 255
    linear = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)
    linear[0, 0] = 7.5
    path = tmp_path / "f.0001.exr"
    assert cv2.imwrite(str(path), linear)
    back = seq.read_frame(path, 1 << 30)
    want = srgb.copy()
    want[0, 0] = 255
    assert back.dtype == np.uint8 and np.abs(back.astype(int) - want).max() <= 1


def test_sequence_with_gap_16bit_names_and_resume(tiny_vda_ckpt: Path, tmp_path: Path) -> None:
    """A 16-bit PNG sequence with a gap through the temporal model: the outputs keep the frame
    numbers; the gap is reported; --skip-existing skips the finished clip and remakes a format
    with a frame file missing."""
    numbers = [1001, 1002, 1003, 1004, 1007, 1008, 1009]
    write_frames(tmp_path / "in16", "plate.{:04d}.png", numbers, lambda k: scene(k, 0), np.uint16)
    out = tmp_path / "out"
    r = predict([str(tmp_path / "in16" / "plate.####.png"), "-o", str(out), "-f",
                 "exr,png16,npy,color", "--fps", "25"], tiny_vda_ckpt)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["frames"] == 7 and s["settings"]["fps"] == "25"
    [clip] = s["clips"]
    assert clip["missing"] == [[1005, 1006]] and clip["first"] == 1001 and clip["fps"] == "25"
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    want = [f"plate_depth.{n}.{e}" for n in numbers for e in ("exr", "png")] + \
        ["plate_depth.npy"] + [f"plate_depth_png16.{n}.png" for n in numbers]
    assert names == sorted(want)
    stack = np.load(out / "plate_depth.npy")
    assert stack.shape == (7, H, W)
    exr = cv2.imread(str(out / "plate_depth.1007.exr"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(exr, stack[4])
    p16 = cv2.imread(str(out / "plate_depth_png16.1009.png"), cv2.IMREAD_UNCHANGED)
    lo, hi = stack.min(), stack.max()
    assert p16.dtype == np.uint16 and np.abs(p16 - (stack[6] - lo) / (hi - lo) * 65535).max() <= 1
    again = predict([str(tmp_path / "in16" / "plate.####.png"), "-o", str(out), "-f",
                     "exr,png16,npy,color", "--fps", "25", "--skip-existing"], tiny_vda_ckpt)
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 1
    (out / "plate_depth.1008.exr").unlink()
    redo = predict([str(tmp_path / "in16" / "plate.####.png"), "-o", str(out), "-f",
                    "exr,png16", "--fps", "25", "--skip-existing"], tiny_vda_ckpt)
    assert redo.exit_code == 0, redo.output
    assert np.array_equal(cv2.imread(str(out / "plate_depth.1008.exr"), cv2.IMREAD_UNCHANGED),
                          stack[5])


def test_exr_folder_sequence_per_frame_model(tiny_ckpt: Path, tmp_path: Path) -> None:
    """`--sequence` on a folder of EXR frames (an unreadable one among them) with a per-frame
    model: pfm and npy per frame keep the numbers; the bad frame is an error line and a gap;
    `--sequence-video` makes the colour map an H.264 video at the default 24 fps."""
    shot = tmp_path / "shot"
    shot.mkdir()
    for n in (1, 2, 3):
        x = scene(n, 1).astype(np.float32) / 255
        assert cv2.imwrite(str(shot / f"bg.{n:04d}.exr"), x ** 2.2)
    (shot / "bg.0004.exr").write_bytes(b"not an exr")
    out = tmp_path / "out"
    r = predict([str(shot), "--sequence", "-o", str(out), "-f", "pfm,npy,color",
                 "--sequence-npy", "frames", "--sequence-video"], tiny_ckpt, "da2-tiny-test")
    assert r.exit_code == 1
    assert "frame 4" in r.output and "left out" in r.output
    got = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert got == [f"bg_depth.{n:04d}.{e}" for n in (1, 2, 3) for e in ("npy", "pfm")] + \
        ["bg_depth.mp4"]
    assert np.load(out / "bg_depth.0002.npy").shape == (H, W)
    video = probe(out / "bg_depth.mp4")
    assert video["n"] == 3 and video["rate"] == 24 and (video["w"], video["h"]) == (W, H)


def test_ffv1_round_trip_is_png16(tiny_ckpt: Path, tmp_path: Path) -> None:
    """`-f ffv1` holds png16's values bit for bit, with the source's frame times and audio."""
    clip = make_video(tmp_path / "c.mp4", 6, W, H, rate=Fraction(25), audio="aac")
    out = tmp_path / "out"
    r = predict([str(clip), "-o", str(out), "-f", "ffv1,png16", "--scene-cuts"], tiny_ckpt,
                "da2-tiny-test")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["clips"][0]["scene_cuts"] == []  # a moving pattern: no cut
    frames, pts = read_ffv1(out / "c.mkv")
    png = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                    for p in sorted((out / "c_png16").iterdir())])
    assert frames.dtype == np.uint16 and frames.shape == (6, H, W)
    assert np.array_equal(frames, png) and frames.max() == 65535 and frames.min() == 0
    src_ms = [float(t) * 1000 for t in probe(clip)["times"]]  # Matroska: milliseconds
    assert np.abs(np.array(pts) - np.array(src_ms)).max() <= 1
    assert audio_packets(out / "c.mkv") > 0


def test_scene_cut_restarts_the_temporal_model(tiny_vda_ckpt: Path, tmp_path: Path) -> None:
    """Two synthetic scenes back to back: the cut is found at the first frame of the second,
    whose depth then equals that shot run alone (with the colour range of its own)."""
    a, b = 9, 12
    write_frames(tmp_path / "edit", "e.{:03d}.png", list(range(1, a + b + 1)),
                 lambda k: scene(k, 0) if k < a else scene(k - a, 1))
    write_frames(tmp_path / "alone", "e.{:03d}.png", list(range(a + 1, a + b + 1)),
                 lambda k: scene(k, 1))
    r = predict([str(tmp_path / "edit" / "e.###.png"), "-o", str(tmp_path / "o"), "-f",
                 "npy,gray", "--scene-cuts"], tiny_vda_ckpt)
    assert r.exit_code == 0, r.output
    [clip] = json.loads(r.stdout)["clips"]
    assert clip["scene_cuts"] == [{"index": a, "frame": a + 1}]
    assert len(clip["shot_ranges"]) == 2
    both = np.load(tmp_path / "o" / "e_depth.npy")
    r1 = predict([str(tmp_path / "alone" / "e.###.png"), "-o", str(tmp_path / "o1"), "-f",
                  "npy"], tiny_vda_ckpt)
    assert r1.exit_code == 0, r1.output
    alone = np.load(tmp_path / "o1" / "e_depth.npy")
    np.testing.assert_allclose(both[a:], alone, rtol=0, atol=1e-6 * float(np.abs(alone).max()))
    gray = cv2.imread(str(tmp_path / "o" / f"e_depth_gray.{a + 1:03d}.png"), cv2.IMREAD_GRAYSCALE)
    lo, hi = alone.min(), alone.max()  # the second shot's own colour range
    assert np.abs(gray.astype(int) - np.round((alone[0] - lo) / (hi - lo) * 255)).max() <= 1


@pytest.mark.parametrize("text,want", [("24", Fraction(24)), ("23.976", Fraction(24000, 1001)),
                                       ("30000/1001", Fraction(30000, 1001)), ("12.5", Fraction(25, 2))])
def test_fps_values(text: str, want: Fraction) -> None:
    from depthcli.cli.predict import _fps

    assert _fps(text) == want


def test_no_clobber_sees_the_frame_files(tiny_ckpt: Path, tmp_path: Path) -> None:
    """A file of the user's at one frame's output name: --no-clobber refuses the sequence."""
    write_frames(tmp_path / "in", "p.{:02d}.png", [1, 2], lambda k: scene(k, 0))
    out = tmp_path / "out"
    out.mkdir()
    (out / "p_depth.02.pfm").write_bytes(b"mine")
    r = predict([str(tmp_path / "in" / "p.##.png"), "-o", str(out), "-f", "pfm",
                 "--no-clobber"], tiny_ckpt, "da2-tiny-test")
    assert r.exit_code == 1 and "not replacing" in r.output
    assert (out / "p_depth.02.pfm").read_bytes() == b"mine"
    assert not (out / "p_depth.01.pfm").exists()


@pytest.mark.parametrize("where,at", [("pass1", 8), ("pass2", 5)])
def test_killed_sequence_resumes_to_the_same_bytes(tiny_ckpt: Path, tmp_path: Path,
                                                   monkeypatch, where: str, at: int) -> None:
    """A sequence with a cut, killed in either pass and rerun with --skip-existing: every file
    (per-frame PNGs by shot range, EXR, the FFV1 video) equals an uninterrupted run's."""
    from test_video_resume import _files, _killed

    monkeypatch.setenv("DEPTHCLI_CHECKPOINT_FRAMES", "3")
    write_frames(tmp_path / "in", "s.{:04d}.png", list(range(11, 23)),
                 lambda k: scene(k, 0) if k < 7 else scene(k, 1))
    args = ["predict", str(tmp_path / "in" / "s.####.png"), "-f", "exr,color,ffv1",
            "--scene-cuts", "--model", "da2-tiny-test", "--weights", str(tiny_ckpt),
            "--input-size", "56", "--device", "cpu", "--backend", "torch", "--threads", "1",
            "-q"]
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert CliRunner().invoke(main, [*args, "-o", str(ref)]).exit_code == 0
    _killed(where, at, [*args, "-o", str(out)])
    assert not (out / "s_depth.mkv").exists()
    r = CliRunner().invoke(main, [*args, "-o", str(out), "--skip-existing", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["clips"][0]["scene_cuts"] == [{"index": 7, "frame": 18}]
    assert _files(out) == _files(ref) and len(_files(ref)) == 12 * 2 + 1


def test_ffv1_metric_is_millimetres(tmp_path: Path) -> None:
    """Metric depth: the FFV1 frames are png16's millimetres (saturating at 65.535 m), and the
    writer continues after a resume from its durable count."""
    from depthcli.io.video_decode import VideoInfo
    from depthcli.outputs import OutputOptions
    from depthcli.outputs.ffv1 import Ffv1Writer
    from depthcli.outputs.sinks import FrameOut

    info = VideoInfo(tmp_path / "src", 5, 4, Fraction(30000, 1001), Fraction(1001, 30000), 3, 0,
                     None, None)
    opts = OutputOptions(("ffv1",), metric=True)
    depth = [np.full((4, 5), v, np.float32) for v in (1.2344, 70.0, 0.0004)]
    w = Ffv1Writer(tmp_path / "f", info, opts, None)
    w.take(FrameOut(0, 0, 1, depth[0], None))
    state = w.sync()
    w.take(FrameOut(1, 1, 1, depth[1], None))  # not durable: dropped by the resume
    w.abort()
    w = Ffv1Writer(tmp_path / "f", info, opts, None)
    assert w.resume(state) == 1
    for i in (1, 2):
        w.take(FrameOut(i, i, 1, depth[i], None))
    w.finish()
    frames, pts = read_ffv1(tmp_path / "f" / "out.mkv")
    assert [int(f[0, 0]) for f in frames] == [1234, 65535, 0] and frames.shape == (3, 4, 5)
    assert pts == [0, 33, 67]  # 1001/30000 s a frame, in Matroska's milliseconds
