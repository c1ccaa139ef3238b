#!/usr/bin/env bash
# Regenerate the synthetic speech clips from their texts (needs Debian's espeak-ng, sox, ffmpeg).
#
#   ./make_test_audio.sh                           rebuild every clip
#   ./make_test_audio.sh heldout_wind_16k.wav ...  rebuild only the clips named
#
# Each clip: 16-bit mono espeak-ng speech in the voice, speed (wpm) and word gap
# its recipe below gives, with 0.5 s of silence at both ends (browsers' fake
# microphones need a quiet start).
# sox dithers when it resamples; -R seeds the dither, so a rebuild is repeatable,
# but the committed clips were made without it (and espeak-ng versions differ
# more): name the clips you add rather than rebuilding the committed ones, which
# recorded figures used.
set -euo pipefail
cd "$(dirname "$0")"
espeak_clip() {  # text-file voice wpm word-gap(10 ms) rate out.wav
  local tmp; tmp=$(mktemp --suffix=.wav)
  espeak-ng -v "$2" -s "$3" -g "$4" -w "$tmp" -f "$1"
  sox -R "$tmp" -r "$5" -b 16 -c 1 "$6" pad 0.5 0.5
  rm -f "$tmp"
}
build() {  # out-file
  case "$1" in
    en_16k.wav) espeak_clip en_16k.txt en-us 140 3 16000 "$1" ;;
    en_48k.wav) espeak_clip en_48k.txt en-us 140 3 48000 "$1" ;;
    # A minute of continuous, faster speech in another voice (few pauses: the hard case).
    en_long_16k.wav) espeak_clip en_long_16k.txt en-us+m3 165 2 16000 "$1" ;;
    # en_48k.wav as MP3 (reference text: en_48k.txt) for the file clients; bit-exact, no tags.
    en_48k.mp3)
      ffmpeg -hide_banner -loglevel error -y -i en_48k.wav -map_metadata -1 -fflags +bitexact \
        -flags:a +bitexact -codec:a libmp3lame -b:a 64k "$1" ;;
    # Held out: six clips in other voices and speeds that no engine setting was
    # tuned on (`python -m bench.replay --held-out`), to tell tuning from progress.
    heldout_library_16k.wav) espeak_clip "${1%.wav}.txt" en-us+f3 150 2 16000 "$1" ;;
    heldout_bread_16k.wav) espeak_clip "${1%.wav}.txt" en 175 1 16000 "$1" ;;
    heldout_train_16k.wav) espeak_clip "${1%.wav}.txt" en-us+m7 125 4 16000 "$1" ;;
    heldout_meeting_16k.wav) espeak_clip "${1%.wav}.txt" en-us 160 2 16000 "$1" ;;
    heldout_doctor_16k.wav) espeak_clip "${1%.wav}.txt" en+f2 140 3 16000 "$1" ;;
    heldout_wind_16k.wav) espeak_clip "${1%.wav}.txt" en-us+m5 185 1 16000 "$1" ;;
    # Arabic, for the multilingual base model (no word gap: espeak-ng's default).
    ar_16k.wav) espeak_clip ar_16k.txt ar 130 0 16000 "$1" ;;
    *) echo "make_test_audio.sh: no recipe for $1" >&2; return 1 ;;
  esac
}
all=(en_16k.wav en_48k.wav en_long_16k.wav en_48k.mp3
  heldout_library_16k.wav heldout_bread_16k.wav heldout_train_16k.wav
  heldout_meeting_16k.wav heldout_doctor_16k.wav heldout_wind_16k.wav ar_16k.wav)
for clip in "${@:-${all[@]}}"; do build "$clip"; done
