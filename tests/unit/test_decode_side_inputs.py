"""The decoder opens nothing but the upload: playlists, concat lists and session descriptions that
name other files or hosts are not audio, and the answer is the same whether what they name exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from escriba.audio.decode import decode_audio
from escriba.audio.errors import NotAudioError
from tests.support import media

pytestmark = pytest.mark.timeout(30)


def playlists(target: str) -> dict[str, bytes]:
    return {
        "concat": f"ffconcat version 1.0\nfile '{target}'\n".encode(),
        "hls": f"#EXTM3U\n#EXT-X-TARGETDURATION:11\n#EXTINF:11,\nfile://{target}\n#EXT-X-ENDLIST\n".encode(),
        "sdp": b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n",
        "ffmetadata": f";FFMETADATA1\ntitle={target}\n".encode(),
    }


@pytest.mark.parametrize("kind", ["concat", "hls", "sdp", "ffmetadata"])
def test_a_playlist_is_not_audio_and_says_nothing_of_what_it_names(kind: str) -> None:
    # Relative names are what FFmpeg's concat demuxer calls "safe": without the allow-lists it opens
    # them (and transcribes a server-side file), and a missing one fails differently.
    existing = os.path.relpath(media.JFK)
    missing = os.path.join(os.path.dirname(existing), "nothing-here.flac")
    answers = []
    for target in (existing, missing):
        with pytest.raises(NotAudioError) as caught:
            decode_audio(playlists(target)[kind], max_duration_s=60, filename="list.txt")
        answers.append(str(caught.value))
    assert answers[0] == answers[1]
    assert existing not in answers[0] and "nothing-here" not in answers[0]


@pytest.mark.parametrize(
    "encode",
    [media.to_mp3, media.to_wav, media.to_flac, media.to_ogg_opus, media.to_m4a_aac, media.to_webm_opus],
)
def test_the_containers_people_send_still_decode(encode: object) -> None:
    samples, rate = media.speech("jfk.flac")
    data = encode(samples, rate)  # type: ignore[operator]
    assert decode_audio(data, max_duration_s=60).duration_s == pytest.approx(11.0, abs=0.1)


def test_a_playlist_on_disk_is_not_audio_either(tmp_path: Path) -> None:
    """A path (the preprocess stage spools large uploads) may use the file protocol, for itself only."""
    listing = tmp_path / "upload.bin"
    listing.write_bytes(playlists(os.path.relpath(media.JFK))["concat"])
    with pytest.raises(NotAudioError):
        decode_audio(listing, max_duration_s=60)
    assert decode_audio(media.JFK, max_duration_s=60).duration_s == pytest.approx(11.0, abs=0.1)
