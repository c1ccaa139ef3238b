#!/usr/bin/env bash
# Regenerate the synthetic speech clips from their texts (needs Debian's espeak-ng, sox, ffmpeg).
# Each clip: espeak-ng US English at 140 wpm with 30 ms word gaps, 16-bit mono,
# 0.5 s of silence at both ends (browsers' fake microphones need a quiet start).
# sox dithers when it resamples, so a rebuild differs from the committed clips
# in the lowest bit (and espeak-ng versions differ more).
set -euo pipefail
cd "$(dirname "$0")"
make_clip() {  # text-file rate out.wav
  local tmp; tmp=$(mktemp --suffix=.wav)
  espeak-ng -v en-us -s 140 -g 3 -w "$tmp" -f "$1"
  sox "$tmp" -r "$2" -b 16 -c 1 "$3" pad 0.5 0.5
  rm -f "$tmp"
}
make_clip en_16k.txt 16000 en_16k.wav
make_clip en_48k.txt 48000 en_48k.wav
# A minute of continuous, faster speech in another voice (few pauses: the hard case).
tmp=$(mktemp --suffix=.wav)
espeak-ng -v en-us+m3 -s 165 -g 2 -w "$tmp" -f en_long_16k.txt
sox "$tmp" -r 16000 -b 16 -c 1 en_long_16k.wav pad 0.5 0.5
rm -f "$tmp"
# The same clip as MP3 (reference text: en_48k.txt) for the file clients; bit-exact, no tags.
ffmpeg -hide_banner -loglevel error -y -i en_48k.wav -map_metadata -1 -fflags +bitexact \
  -flags:a +bitexact -codec:a libmp3lame -b:a 64k en_48k.mp3
# Held out: six clips in other voices and speeds that no engine setting was
# tuned on (`python -m bench.replay --held-out`), to tell tuning from progress.
held_out() {  # name voice wpm word-gap(10 ms)
  local tmp; tmp=$(mktemp --suffix=.wav)
  espeak-ng -v "$2" -s "$3" -g "$4" -w "$tmp" -f "heldout_$1_16k.txt"
  sox "$tmp" -r 16000 -b 16 -c 1 "heldout_$1_16k.wav" pad 0.5 0.5
  rm -f "$tmp"
}
held_out library en-us+f3 150 2
held_out bread en 175 1
held_out train en-us+m7 125 4
held_out meeting en-us 160 2
held_out doctor en+f2 140 3
held_out wind en-us+m5 185 1
espeak_ar() { local tmp; tmp=$(mktemp --suffix=.wav); espeak-ng -v ar -s 130 -w "$tmp" -f "$1"; sox "$tmp" -r 16000 -b 16 -c 1 "$2" pad 0.5 0.5; rm -f "$tmp"; }
espeak_ar ar_16k.txt ar_16k.wav  # Arabic, for the multilingual base model
