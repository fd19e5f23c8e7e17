"""A source's audio carried into a depth video (`io.video_encode`, `outputs.ffv1`).

The first audio stream is copied packet for packet when it is a codec browsers play in mp4 (aac,
mp3, opus, flac), otherwise re-encoded to AAC; it is interleaved with the video as the video is
written (a second demuxer on the same file), so nothing is buffered for the whole file. Audio
problems are logged as warnings and never fail the video.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import av.error

from .video_decode import error_reason

_logger = logging.getLogger(__name__)

COPY_AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "flac"})  # played by browsers from mp4


class AudioFeed:
    """Moves the source's first audio stream into an output container, interleaved by time.

    Copies packets when the codec plays from mp4 in browsers, else re-encodes to AAC. Errors
    disable the audio (logged), never the video.
    """

    def __init__(self, src: Path, out: av.container.OutputContainer) -> None:
        self.src = src
        self.inp = av.open(str(src), "r")
        self.ias = self.inp.streams.audio[0]
        name = self.ias.codec_context.name
        self.copy = name in COPY_AUDIO_CODECS and name in out.supported_codecs
        self.out = out
        if self.copy:
            self.oas = out.add_stream_from_template(self.ias)
        else:
            rate = self.ias.codec_context.sample_rate or 48000
            layout = "mono" if self.ias.codec_context.channels == 1 else "stereo"
            # Check that AAC opens with these settings before the stream exists: a stream that
            # fails to open would fail the whole file when the header is written.
            test = av.CodecContext.create("aac", "w")
            test.sample_rate = rate
            test.layout = layout
            test.format = "fltp"
            test.open()
            self.oas = out.add_stream("aac", rate=rate)
            self.oas.layout = layout
            self.oas.format = "fltp"
            self.oas.bit_rate = 160_000 if layout == "stereo" else 96_000
        self._packets = self.inp.demux(self.ias)
        self._pending: av.Packet | None = None
        self.done = False
        if self.ias.time_base is None:
            raise ValueError("audio stream without a time base")
        self.time_base = Fraction(self.ias.time_base)

    def _next(self) -> av.Packet | None:
        if self._pending is not None:
            p, self._pending = self._pending, None
            return p
        for p in self._packets:
            if p.dts is None and p.pts is None:
                continue  # demuxer flush packet
            return p
        return None

    def feed(self, until: float | None) -> None:
        """Write audio up to `until` seconds (all of it with None)."""
        if self.done:
            return
        try:
            while True:
                p = self._next()
                if p is None:
                    self._finish()
                    return
                ts = p.pts if p.pts is not None else p.dts
                if until is not None and ts is not None and float(ts * self.time_base) > until:
                    self._pending = p
                    return
                self._write(p)
        except av.error.FFmpegError as exc:
            _logger.warning("%s: audio stopped (%s); the video goes on", self.src, error_reason(exc))
            self._finish()

    def _write(self, p: av.Packet) -> None:
        if self.copy:
            p.stream = self.oas
            self.out.mux(p)
            return
        for fr in p.decode():
            if not isinstance(fr, av.AudioFrame):  # an audio packet decodes to audio frames
                continue
            fr.pts = None  # the encoder numbers samples itself
            for q in self.oas.encode(fr):
                self.out.mux(q)

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            if not self.copy:
                for q in self.oas.encode(None):
                    self.out.mux(q)
        except av.error.FFmpegError as exc:
            _logger.warning("%s: audio flush failed (%s)", self.src, error_reason(exc))
        self.close()

    def close(self) -> None:
        self.inp.close()
