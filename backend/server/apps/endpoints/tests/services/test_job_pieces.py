"""How a batch job cuts its file into pieces: by byte offsets, a record never split, with or
without quoted line breaks, wherever a block of the read ends."""

from __future__ import annotations

import csv
import io

import pytest

from apps.endpoints.batch import jobs

HEADER = b"name,note\n"


def records(text: bytes) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text.decode(), newline="")) if row]


def check_pieces(data: bytes, every: int) -> list[tuple[int, int, int]]:
    pieces = jobs.record_ranges(io.BytesIO(data), every)
    body = data[len(HEADER) :]
    assert b"".join(data[start:end] for start, end, _ in pieces) == body  # nothing lost
    assert [start for start, _, _ in pieces] == [len(HEADER), *(end for _, end, _ in pieces[:-1])]
    counts = [len(records(data[start:end])) for start, end, _ in pieces]
    assert counts[:-1] == [every] * (len(pieces) - 1) and 0 < counts[-1] <= every
    assert sum(counts) == len(records(body))
    return pieces


@pytest.mark.parametrize("block", [7, 64, 1 << 20])
@pytest.mark.parametrize("trailing_newline", [True, False])
def test_a_file_without_quotes_is_cut_at_every_nth_newline(
    monkeypatch: pytest.MonkeyPatch, block: int, trailing_newline: bool
) -> None:
    monkeypatch.setattr(jobs, "_BLOCK_BYTES", block)
    data = HEADER + b"\n".join(b"n%d,x%d" % (i, i * 7) for i in range(23))
    data += b"\n" if trailing_newline else b""
    pieces = check_pieces(data, every=5)
    assert [line for _, _, line in pieces] == [2, 7, 12, 17, 22]


@pytest.mark.parametrize("block", [7, 64, 1 << 20])
@pytest.mark.parametrize("quotes_from", [0, 15])
def test_a_quoted_line_break_stays_in_its_record_wherever_quotes_start(
    monkeypatch: pytest.MonkeyPatch, block: int, quotes_from: int
) -> None:
    # Quotes may first show up in a later block of the read: the blocks before them are
    # cut at every newline, the ones after count quotes, and a block that ends inside a
    # quoted cell carries that over to the next.
    monkeypatch.setattr(jobs, "_BLOCK_BYTES", block)
    rows = [
        b'n%d,"two\nlines, ""quoted"""' % i if i >= quotes_from and i % 3 == 0 else b"n%d,x" % i
        for i in range(23)
    ]
    data = HEADER + b"\n".join(rows) + b"\n"
    pieces = check_pieces(data, every=4)
    assert len(pieces) == 6
    assert records(data[pieces[1][0] : pieces[1][1]])[0][0] == "n4"


def test_a_header_alone_has_no_pieces() -> None:
    assert jobs.record_ranges(io.BytesIO(HEADER), 5) == []
    assert jobs.record_ranges(io.BytesIO(b"name,note"), 5) == []
