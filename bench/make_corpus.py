"""Build a larger synthetic corpus for measuring a 1-point WER gap (not committed: ~75 MB).

    apt-get install flite festival festvox-us-slt-hts fortunes   # Debian packages
    python -m bench.make_corpus /tmp/asr-corpus                  # 40 passages, ~6,000 words
    python -m bench.replay /tmp/asr-corpus/*.wav                 # streamed vs offline

The 17 clips of `bench.replay` hold 1,840 words; one commit policy against
another moves 5-10 errors (0.3-0.5 points), so a 1-point gap to offline is at the
edge of what they can tell. This script reads quotations from the Debian
``fortunes`` package (prose categories only, without attributions, digits or
markup), groups them into passages of about a minute, and reads each passage
in one of five voices: flite's awb, rms, slt and kal, and festival's HTS slt.
Quotations are separated by 0.3-0.9 s of silence, like a reader's pauses. The
same packages give the same corpus: the choice and the pauses are seeded.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from app.settings import ENGINE_SAMPLE_RATE
from bench.replay import engine_audio

FORTUNES = Path("/usr/share/games/fortunes")
CATEGORIES = (
    "education",
    "humorists",
    "literature",
    "love",
    "men-women",
    "people",
    "platitudes",
    "politics",
    "science",
    "wisdom",
    "work",
)
VOICES = ("flite:awb", "flite:rms", "flite:slt", "festival:cmu_us_slt_arctic_hts", "flite:kal")
_ATTRIBUTION = re.compile(r"^\s*(--|-- |~|\t\t)")
_CLEAN = re.compile(r"^[A-Za-z ,.;:'!?\-]+$")


def quotations() -> list[str]:
    """Prose quotations of 8-45 words, one line each, in a fixed order."""
    out: list[str] = []
    for name in CATEGORIES:
        text = (FORTUNES / name).read_text(encoding="utf-8", errors="replace")
        for entry in text.split("\n%\n"):
            lines = [line for line in entry.splitlines() if not _ATTRIBUTION.match(line)]
            joined = " ".join(" ".join(lines).split()).replace('"', "")
            if _CLEAN.match(joined) and 8 <= len(joined.split()) <= 45:
                out.append(joined)
    return sorted(set(out))


def synthesize(text: str, voice: str, tmp: Path) -> np.ndarray:
    """``text`` read by ``voice``, as 16 kHz float32."""
    engine, name = voice.split(":")
    out = tmp / "q.wav"
    if engine == "flite":
        subprocess.run(["flite", "-voice", name, "-t", text, "-o", str(out)], check=True)
    else:
        subprocess.run(
            ["text2wave", "-eval", f"(voice_{name})", "-o", str(out)],
            input=text.encode(),
            check=True,
        )
    return engine_audio(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    parser.add_argument("--passages", type=int, default=40)
    parser.add_argument("--words", type=int, default=150, help="words per passage, about")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    pool = quotations()
    rng.shuffle(pool)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.passages):
            voice = VOICES[index % len(VOICES)]
            texts: list[str] = []
            words = 0
            while pool and words < args.words:
                texts.append(pool.pop())
                words += len(texts[-1].split())
            parts = [np.zeros(int(0.5 * ENGINE_SAMPLE_RATE), dtype=np.float32)]
            for text in texts:
                parts.append(synthesize(text, voice, Path(tmp)))
                pause = rng.uniform(0.3, 0.9)
                parts.append(np.zeros(int(pause * ENGINE_SAMPLE_RATE), dtype=np.float32))
            audio = np.concatenate(parts)
            peak = float(np.abs(audio).max()) or 1.0
            pcm = (audio / peak * 0.7 * 32767).astype("<i2")
            label = voice.split(":")[1].replace("cmu_us_slt_arctic_hts", "slthts")
            stem = args.out / f"corpus_{index:02d}_{label}_16k"
            with wave.open(str(stem.with_suffix(".wav")), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(ENGINE_SAMPLE_RATE)
                w.writeframes(pcm.tobytes())
            stem.with_suffix(".txt").write_text(" ".join(texts) + "\n")
            print(stem.name, f"{len(audio) / ENGINE_SAMPLE_RATE:.1f} s", voice, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
