"""shardflow.convert.webvid: WebVid's CSV and downloaded videos (``videos/<page_dir>/<videoid>.mp4``) into
MDS with the videos inside the shards or beside them; in parallel, resumable after a kill -9, read back by
``StreamingInsideWebVid`` / ``StreamingOutsideGIWebVid`` / ``StreamingOutsideDTWebVid`` (bytes, or frames
decoded with PyAV)."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the inputs' builders

from _text_inputs import make_webvid  # noqa: E402
from _vision_inputs import kill_midway  # noqa: E402

from shardflow.dataset import DatasetError  # noqa: E402
from shardflow.dataset.multimodal import (  # noqa: E402
    StreamingInsideWebVid,
    StreamingOutsideDTWebVid,
    StreamingOutsideGIWebVid,
)

MISSING = {3, 17}
OPTIONS = ["--workers", "2", "--partitions", "6", "--size-limit", "40kb"]


def _inside(sample: dict) -> dict:
    return {key: value for key, value in sample.items() if key != "content_path"}


def test_inside_with_two_workers(tmp_path: Path, cli) -> None:
    csv_path, videos, expected = make_webvid(tmp_path / "webvid", rows=40, missing=MISSING)
    out = tmp_path / "out"
    result = cli("webvid", csv_path, "--videos", videos, "--out", out, *OPTIONS)
    assert result.returncode == 0, result.stderr
    assert "webvid: 38 samples" in result.stderr and "2 skipped" in result.stderr
    assert "no video 1000111" in result.stderr and "no video 1000629" in result.stderr
    assert len(list(out.glob("part.*"))) == 6
    dataset = StreamingInsideWebVid(local=str(out))
    assert [dataset[i] for i in range(dataset.num_samples)] == [_inside(s) for s in expected]
    assert sorted(dataset[0]) == [
        "content",
        "contentUrl",
        "duration",
        "name",
        "page_dir",
        "page_idx",
        "videoid",
    ]


def test_outside_reads_each_video_from_beside_the_shards(tmp_path: Path, cli, reader) -> None:
    csv_path, videos, expected = make_webvid(tmp_path / "webvid", rows=30, missing=MISSING)
    out = tmp_path / "out"
    result = cli("webvid", csv_path, "--videos", videos, "--out", out, "--variant", "outside", *OPTIONS)
    assert result.returncode == 0, result.stderr
    stored = reader(out)
    assert stored == [{k: v for k, v in s.items() if k != "content"} for s in expected]
    plain = StreamingOutsideGIWebVid(local=str(out))  # without extra_local/extra_remote: as stored
    assert plain[0] == stored[0]
    for kind in (StreamingOutsideGIWebVid, StreamingOutsideDTWebVid):
        cache = tmp_path / f"videos-{kind.__name__}"
        extra = {"extra_local": str(cache), "extra_remote": str(videos)}
        dataset = kind(local=str(out), predownload=4, num_canonical_nodes=1, **extra)
        assert list(dataset) == expected, kind.__name__  # iterated: DT fetches ahead in its thread
        assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*.mp4")) == sorted(
            s["content_path"] for s in expected
        )


def test_dt_fetches_videos_ahead_of_the_samples_read(tmp_path: Path, cli) -> None:
    csv_path, videos, expected = make_webvid(tmp_path / "webvid", rows=30, missing=set())
    out = tmp_path / "out"
    assert cli("webvid", csv_path, "--videos", videos, "--out", out, "--variant", "outside").returncode == 0
    cache = tmp_path / "cache"
    dataset = StreamingOutsideDTWebVid(
        local=str(out), extra_local=str(cache), extra_remote=str(videos), predownload=4, num_canonical_nodes=1
    )
    samples = iter(dataset)
    assert next(samples) == expected[0]
    deadline = time.monotonic() + 10
    while len(list(cache.rglob("*.mp4"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(list(cache.rglob("*.mp4"))) == 5  # the one read and the 4 next; no further
    assert next(samples) == expected[1]


def test_kill_then_resume_equals_an_uninterrupted_run(tmp_path: Path, cli, reader) -> None:
    csv_path, videos, expected = make_webvid(tmp_path / "webvid", rows=600, missing=MISSING)
    options = [csv_path, "--videos", videos, "--workers", "2", "--partitions", "12", "--size-limit", "100kb"]
    out = tmp_path / "out"
    finished = kill_midway("webvid", [*options, "--out", out], out)
    result = cli("webvid", *options, "--out", out, "--resume")
    assert result.returncode == 0, result.stderr
    assert f"resuming: {len(finished)} of 12 partitions are finished" in result.stderr
    assert reader(out) == [_inside(s) for s in expected]


def test_a_2m_csv_has_no_page_idx(tmp_path: Path, cli, reader) -> None:
    csv_path, videos, expected = make_webvid(tmp_path / "webvid", rows=6, missing=set(), page_idx=False)
    out = tmp_path / "out"
    assert cli("webvid", csv_path, "--videos", videos, "--out", out).returncode == 0
    assert reader(out) == [_inside(s) for s in expected] and "page_idx" not in reader(out)[0]


def test_malformed_rows_are_refused_naming_the_line(tmp_path: Path, cli) -> None:
    csv_path, videos, _ = make_webvid(tmp_path / "webvid", rows=4, missing=set())
    lines = csv_path.read_text().splitlines()
    csv_path.write_text(
        "\n".join([*lines[:3], lines[3].replace("PT00H", "about an hour "), *lines[4:]]) + "\n"
    )
    result = cli("webvid", csv_path, "--videos", videos, "--out", tmp_path / "out")
    assert result.returncode == 1 and f"{csv_path}:4: duration" in result.stderr
    csv_path.write_text("videoid,name\n1,a\n")
    result = cli("webvid", csv_path, "--videos", videos, "--out", tmp_path / "out")
    assert result.returncode == 1 and "has no column contentUrl, duration, page_dir" in result.stderr


def _mp4(frames: int, seed: int) -> tuple[bytes, np.ndarray]:
    """A small MPEG-4 video of flat frames (PyAV), and those frames as decoded from it."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for k in range(frames):
            image = np.full((24, 32, 3), (seed * 50 + k * 30) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = buffer.getvalue()
    with av.open(io.BytesIO(data)) as container:
        decoded = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    return data, decoded


def test_frames_are_decoded_when_asked(tmp_path: Path, cli) -> None:
    pytest.importorskip("av")
    csv_path, videos, expected = make_webvid(tmp_path / "webvid", rows=3, missing=set())
    movies = [_mp4(3 + k, k) for k in range(3)]
    for sample, (data, _) in zip(expected, movies, strict=True):
        (videos / sample["content_path"]).write_bytes(data)
    out = tmp_path / "out"
    assert cli("webvid", csv_path, "--videos", videos, "--out", out).returncode == 0
    dataset = StreamingInsideWebVid(local=str(out), decode=True)
    for k, (data, frames) in enumerate(movies):
        sample = dataset[k]
        assert sample["content"] == data and sample["frames"].dtype == np.uint8
        assert sample["frames"].shape == (3 + k, 24, 32, 3) and np.array_equal(sample["frames"], frames)
        assert abs(float(sample["frames"][0].mean()) - k * 50 % 256) < 3  # the first frame's flat colour
    assert "frames" not in StreamingInsideWebVid(local=str(out))[0]  # decode=False: bytes only
    (videos / expected[0]["content_path"]).write_bytes(b"not a video")
    bad = tmp_path / "bad"
    assert cli("webvid", csv_path, "--videos", videos, "--out", bad).returncode == 0
    with pytest.raises(DatasetError, match="cannot decode a video of 11 bytes"):
        StreamingInsideWebVid(local=str(bad), decode="auto")[0]
    with pytest.raises(ValueError, match="decode='sometimes'"):
        StreamingInsideWebVid(local=str(bad), decode="sometimes")
