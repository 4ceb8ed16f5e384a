"""Typed datasets of WebVid: videos stored inside the shards, or beside them as one file per video.

They read what ``shardflow.convert.webvid`` writes (``--variant inside`` / ``outside``) and what
mosaicml-streaming's WebVid scripts write (the same columns), and yield what its classes of the same names
yield: the sample's dict (``videoid``, ``name``, ``page_dir``, ``duration``, ``contentUrl``, ``page_idx``
when written, and ``content``, the video file's bytes). With ``decode=True`` they also add ``frames``, the
decoded video as a ``uint8`` array ``(frames, height, width, 3)`` (RGB), which needs PyAV
(``pip install 'shardflow-dataset[video]'``); ``decode='auto'`` decodes when PyAV is installed and
otherwise leaves the bytes alone.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shardflow.dataset.dataset import StreamingDataset
from shardflow.dataset.errors import DatasetConfigError, DatasetError
from shardflow.dataset.text import with_reference_defaults

__all__ = ["StreamingInsideWebVid", "StreamingOutsideGIWebVid", "StreamingOutsideDTWebVid", "decode_frames"]


def decode_frames(data: bytes) -> NDArray[np.uint8]:
    """The frames of a video file's bytes, ``(frames, height, width, 3)`` RGB, decoded with PyAV.

    Raises:
        DatasetConfigError: PyAV is not installed.
        DatasetError: The bytes are not a video PyAV can decode.
    """
    try:
        import av
    except ImportError as exc:
        raise DatasetConfigError(
            "decoding videos needs PyAV: pip install 'shardflow-dataset[video]' (or pip install av)"
        ) from exc
    try:
        with av.open(io.BytesIO(data)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except (av.FFmpegError, ValueError) as exc:
        raise DatasetError(f"cannot decode a video of {len(data)} bytes: {exc}") from exc
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def _decoder(decode: bool | str) -> Callable[[bytes], NDArray[np.uint8]] | None:
    """The frame decoder that ``decode`` asks for, or None."""
    if decode is False:
        return None
    if decode is not True and decode != "auto":
        raise DatasetConfigError(f"decode={decode!r}: give False, True or 'auto'")
    try:
        import av  # noqa: F401
    except ImportError as exc:
        if decode == "auto":
            return None
        raise DatasetConfigError(
            "decode=True needs PyAV: pip install 'shardflow-dataset[video]' (or pip install av), or give "
            "decode='auto'"
        ) from exc
    return decode_frames


class _WebVid(StreamingDataset):
    """A WebVid sample's dict, with ``frames`` added when decoding."""

    def __init__(self, *, decode: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decode = decode
        self._decode = _decoder(decode)

    def _sample(self, sample_id: int) -> dict[str, Any]:
        return super().get_item(sample_id)  # type: ignore[no-any-return]

    def get_item(self, sample_id: int) -> dict[str, Any]:
        """The sample's dict (with ``frames`` when decoding and the video is there)."""
        sample = self._sample(sample_id)
        if self._decode is not None and "content" in sample:
            sample["frames"] = self._decode(sample["content"])
        return sample


class StreamingInsideWebVid(_WebVid):
    """WebVid with each video's bytes inside the shards (``shardflow.convert.webvid --variant inside``).

    Takes :class:`StreamingDataset`'s arguments and ``decode`` (see the module's description).
    """


class StreamingOutsideGIWebVid(_WebVid):
    """WebVid with each video in a file of its own beside the shards (``--variant outside``), fetched when
    its sample is read ("GI": in ``get_item``).

    Args:
        extra_remote: Where the videos are (a storage URL or a folder); each sample's ``content_path`` is
            relative to it.
        extra_local: The folder they are downloaded to (kept: a video there is not fetched again).
            With both given, ``content`` holds the video's bytes; otherwise the sample is as stored.
        decode: See the module's description.
        **kwargs: :class:`StreamingDataset`'s arguments; ``partition_algo``, ``shuffle_algo`` and
            ``shuffle_block_size`` default to mosaicml-streaming's for this class (``orig``, ``py1s``,
            ``1 << 18``).
    """

    def __init__(
        self,
        *,
        extra_local: str | None = None,
        extra_remote: str | None = None,
        decode: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(decode=decode, **with_reference_defaults(kwargs))
        self.extra_local = extra_local
        self.extra_remote = extra_remote
        self._extra: Any = None  # the Store of extra_remote, made on first use
        self._reads = 0  # samples read, for the prefetch of StreamingOutsideDTWebVid to keep its distance

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_extra": None}

    def _video(self, content_path: str) -> Path:
        """The local copy of the video at ``content_path``, downloaded when not there yet."""
        assert self.extra_local is not None and self.extra_remote is not None
        local = Path(self.extra_local) / content_path
        if not local.is_file():
            if self._extra is None:
                from shardflow.storage import from_url

                self._extra = from_url(
                    self.extra_remote,
                    download_retry=self.download_retry,
                    download_timeout=self.download_timeout,
                )
            self._extra.download(content_path, local)
        return local

    def _sample(self, sample_id: int) -> dict[str, Any]:
        sample = super()._sample(sample_id)
        self._reads += 1
        if self.extra_local and self.extra_remote:
            sample["content"] = self._video(sample["content_path"]).read_bytes()
        return sample


class StreamingOutsideDTWebVid(StreamingOutsideGIWebVid):
    """:class:`StreamingOutsideGIWebVid` whose videos are fetched ahead by a background thread while it is
    iterated ("DT": the download thread), at most ``predownload`` samples ahead of the sample being read; a
    video that is not there yet when its sample is read is fetched then."""

    def worker_sample_id_chunks(self, *args: Any, **kwargs: Any) -> Iterator[NDArray[np.int64]]:
        """:meth:`StreamingDataset.worker_sample_id_chunks`, whose samples' videos a thread fetches ahead."""
        chunks = super().worker_sample_id_chunks(*args, **kwargs)
        if not (self.extra_local and self.extra_remote):
            return chunks
        return _prefetching(self, chunks)


def _prefetching(
    dataset: StreamingOutsideDTWebVid, chunks: Iterator[NDArray[np.int64]]
) -> Iterator[NDArray[np.int64]]:
    """``chunks`` passed on, while a thread fetches the videos of their samples in order."""
    ids: queue.Queue[int | None] = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=_prefetch, args=(dataset, ids, stop), daemon=True, name="webvid-prefetch").start()
    finished = False
    try:
        for chunk in chunks:
            for sample_id in chunk[chunk >= 0].tolist():
                ids.put(sample_id)
            yield chunk
        finished = True
    finally:
        if not finished:  # abandoned before the end: the thread stops now
            stop.set()
        ids.put(None)


def _prefetch(dataset: StreamingOutsideDTWebVid, ids: queue.Queue[int | None], stop: threading.Event) -> None:
    """Fetch the video of each id from ``ids`` (until None), staying within ``predownload`` of the reads.

    Best effort: a video it cannot fetch is left to ``get_item``, which raises what is wrong.
    """
    start, fetched = dataset._reads, 0
    while not stop.is_set():
        sample_id = ids.get()
        if sample_id is None:
            return
        while fetched - (dataset._reads - start) >= max(1, dataset.predownload) and not stop.is_set():
            time.sleep(0.005)
        fetched += 1
        try:
            dataset._video(StreamingDataset.get_item(dataset, sample_id)["content_path"])
        except Exception:  # noqa: BLE001, S112  (get_item fetches it again, and raises the error)
            continue
