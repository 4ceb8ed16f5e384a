"""WebDataset tars read at random: members grouped into samples as the webdataset library groups them,
found from the headers alone (locally or through ranged reads), refused clearly when they cannot be."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from shardflow.format import ShardFormatError, ShardReader, read_shards
from shardflow.format.index import write_index
from shardflow.format.webdataset import scan_tar, tar_entry


def write_tar(path: Path, members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> Path:
    """A tar of ``(name, data)`` regular files, in order (names ending in '/' are directories)."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def index_tars(folder: Path, *names: str) -> None:
    """``folder/index.json`` listing the tars ``names`` of the folder."""
    entries = []
    for name in names:
        data = (folder / name).read_bytes()
        entries.append(tar_entry(name, len(data), lambda start, end, data=data: data[start:end]))
    write_index(folder, entries)


def read_all(folder: Path) -> list[dict]:
    return [ShardReader(folder, shard).get(i) for shard in read_shards(folder) for i in range(shard.samples)]


def test_tars_written_by_webdataset_read_as_webdataset_reads_them(tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    sources = []
    for t in range(2):
        with wds.TarWriter(str(tmp_path / f"part-{t}.tar")) as writer:
            for i in range(t * 25, t * 25 + 25):
                sample = {
                    "__key__": f"s{i:04d}",
                    "txt": f"text {i}",
                    "cls": i % 3,
                    "bin": bytes(range(i % 9)),
                }
                if i % 4 == 0:
                    sample["json"] = {"i": i}  # samples may hold different fields
                writer.write(sample)
                sources.append(sample)
    index_tars(tmp_path, "part-0.tar", "part-1.tar")
    got = read_all(tmp_path)
    theirs = [
        {key: value for key, value in sample.items() if key not in ("__url__", "__local_path__")}
        for t in range(2)
        for sample in wds.WebDataset(str(tmp_path / f"part-{t}.tar"), shardshuffle=False)
    ]
    assert got == theirs and len(got) == len(sources) == 50
    assert [sample["__key__"] for sample in got] == [source["__key__"] for source in sources]
    assert got[4]["json"] == b'{"i": 4}' and "json" not in got[5]
    shard = read_shards(tmp_path)[0]
    assert shard.format == "webdataset" and list(shard.columns)[0] == "__key__"
    assert set(shard.columns) == {"__key__", "txt", "cls", "bin", "json"}


def test_members_group_by_key_as_the_webdataset_library_does(tmp_path: Path) -> None:
    members = [
        ("dir.v1/", b""),  # directories are not samples
        ("dir.v1/a.seg.PNG", b"1"),  # key up to the file name's first dot; field lowercased
        ("dir.v1/a.txt", b"2"),
        ("__meta__", b"skipped"),  # metadata members
        ("__index__/x.txt", b"skipped"),
        ("README", b"no dot: skipped"),
        ("b.txt", b"3"),
        ("dir.v1/a.json", b"4"),  # the key again, not next to its first members: a new sample
    ]
    write_tar(tmp_path / "t.tar", members)
    index_tars(tmp_path, "t.tar")
    assert read_all(tmp_path) == [
        {"__key__": "dir.v1/a", "seg.png": b"1", "txt": b"2"},
        {"__key__": "b", "txt": b"3"},
        {"__key__": "dir.v1/a", "json": b"4"},
    ]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_in_every_tar_format(tmp_path: Path, fmt: int) -> None:
    folder = "d" * 90 + "/" + "e" * 50  # over 100 characters: a PAX record, a GNU long name or a ustar prefix
    members = [(f"{folder}/k{i}.txt", f"v{i}".encode()) for i in range(3)]
    write_tar(tmp_path / "t.tar", members, fmt)
    index_tars(tmp_path, "t.tar")
    assert read_all(tmp_path) == [{"__key__": f"{folder}/k{i}", "txt": f"v{i}".encode()} for i in range(3)]


def test_the_index_is_built_from_headers_through_few_ranged_reads(tmp_path: Path) -> None:
    big = bytes(3 << 20)
    members = [(f"k{i}.{ext}", big if ext == "bin" else b"x") for i in range(8) for ext in ("bin", "txt")]
    data = write_tar(tmp_path / "t.tar", members).read_bytes()
    reads: list[tuple[int, int]] = []

    def ranged(start: int, end: int) -> bytes:
        reads.append((start, end))
        return data[start:end]

    entry = tar_entry("t.tar", len(data), ranged, url="s3://bucket/t.tar")
    assert entry["samples"] == 8 and entry["members"] == 16 and entry["url"] == "s3://bucket/t.tar"
    assert sum(end - start for start, end in reads) < len(data) / 4, "headers, not the 3 MiB members"
    assert len(reads) <= 2 * 8 + 1
    write_index(tmp_path, [entry])
    assert read_all(tmp_path)[7] == {"__key__": "k7", "__url__": "s3://bucket/t.tar", "bin": big, "txt": b"x"}


def test_a_field_twice_in_one_sample_is_an_error(tmp_path: Path) -> None:
    data = write_tar(tmp_path / "t.tar", [("a.txt", b"1"), ("a.txt", b"2")]).read_bytes()
    with pytest.raises(ShardFormatError, match=r"t.tar: member 'a.txt' repeats field 'txt' of sample 'a'"):
        scan_tar(lambda start, end: data[start:end], len(data), "t.tar")


def test_gzipped_tars_are_refused_naming_the_file(tmp_path: Path) -> None:
    data = write_tar(tmp_path / "t.tar", [("a.txt", b"1")]).read_bytes()
    zipped = gzip.compress(data)
    with pytest.raises(
        ShardFormatError, match=r"shard-0.tar.gz is gzip-compressed.*cannot be read at random"
    ):
        tar_entry("shard-0.tar.gz", len(zipped), lambda start, end: zipped[start:end])
    with pytest.raises(ShardFormatError, match=r"disguised.tar is gzip-compressed"):  # by content too
        tar_entry("disguised.tar", len(zipped), lambda start, end: zipped[start:end])


def test_truncated_and_corrupt_tars_are_named(tmp_path: Path) -> None:
    data = write_tar(tmp_path / "t.tar", [(f"k{i}.bin", bytes(2000)) for i in range(3)]).read_bytes()
    cut = data[:3000]
    with pytest.raises(ShardFormatError, match="cut.tar is truncated"):
        scan_tar(lambda start, end: cut[start:end], len(cut), "cut.tar")
    broken = bytearray(data)
    broken[0:5] = b"?????"
    with pytest.raises(ShardFormatError, match="bad.tar: no valid tar header at byte 0"):
        scan_tar(lambda start, end: bytes(broken[start:end]), len(broken), "bad.tar")


def test_a_tar_changed_after_indexing_does_not_match(tmp_path: Path) -> None:
    write_tar(tmp_path / "t.tar", [("a.txt", b"1"), ("b.txt", b"2")])
    index_tars(tmp_path, "t.tar")
    write_tar(tmp_path / "t.tar", [("a.txt", b"1"), ("a.json", b"2")])
    shard = read_shards(tmp_path)[0]
    with pytest.raises(ShardFormatError, match="does not match its index: it holds 1 samples in 2 members"):
        ShardReader(tmp_path, shard).get(0)


def _rewrite_checksum(data: bytearray, offset: int, signed: bool, layout: str) -> None:
    """Give the header at ``offset`` its checksum as ``layout`` formats it, summed as signed or unsigned."""
    header = bytes(data[offset : offset + 512])
    body = header[:148] + b" " * 8 + header[156:]
    total = sum(b - 256 if signed and b > 127 else b for b in body)
    field = (layout % total).encode()
    assert len(field) == 8
    data[offset + 148 : offset + 156] = field


@pytest.mark.parametrize(("signed", "layout"), [(False, "%07o\0"), (True, "%06o\0 "), (False, " %05o\0 ")])
def test_checksums_in_other_layouts_and_signed_sums_are_accepted(
    tmp_path: Path, signed: bool, layout: str
) -> None:
    members = [("k\u00e9/0.txt", b"x"), ("k\u00e9/1.txt", b"y")]  # non-ASCII names: signed sums differ
    data = bytearray(write_tar(tmp_path / "t.tar", members, tarfile.USTAR_FORMAT).read_bytes())
    for offset in (0, 1024):
        _rewrite_checksum(data, offset, signed, layout)
    got = scan_tar(lambda start, end: bytes(data[start:end]), len(data), "t.tar", window=512)
    assert got.keys == ["k\u00e9/0", "k\u00e9/1"] and got.sizes.tolist() == [1, 1]


def test_a_corrupt_header_deep_in_a_large_tar_is_named_by_its_byte(tmp_path: Path) -> None:
    count = 5000  # headers are checked a few thousand at a time: this one lies in a later batch
    data = bytearray(
        write_tar(
            tmp_path / "t.tar", [(f"k{i}.txt", b"v") for i in range(count)], tarfile.USTAR_FORMAT
        ).read_bytes()
    )
    bad = 4321 * 1024  # each member: its header and one block of data
    data[bad + 100] ^= 1  # the mode field: the walk goes on, the checksum does not hold
    with pytest.raises(
        ShardFormatError, match=rf"t.tar: no valid tar header at byte {bad} \(checksum mismatch\)"
    ):
        scan_tar(lambda start, end: bytes(data[start:end]), len(data), "t.tar", window=512)
