"""Streaming CSV and JSON responses: rows are written as they come, never held in memory."""

import csv
import io
import json
from collections.abc import Iterator

from django.db import transaction
from django.http import StreamingHttpResponse

from .selectors import Table

FORMULA_FIRST = frozenset("=+-@\t\r")
ROWS_PER_CHUNK = 1000  # one write per thousand rows, not per row


def formula_escaped(cell):
    """A cell that a spreadsheet would run as a formula, quoted with a leading apostrophe."""
    return "'" + cell if cell.__class__ is str and cell[:1] in FORMULA_FIRST else cell


def _safe(row: list) -> list:
    return [formula_escaped(cell) for cell in row]


def _csv(table: Table) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.header)
    for count, row in enumerate(table.rows, start=1):
        writer.writerow(_safe(row))
        if count % ROWS_PER_CHUNK == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _json(table: Table) -> Iterator[bytes]:
    parts = ["["]
    header = table.header
    for count, row in enumerate(table.rows, start=1):
        parts.append(
            ("\n" if count == 1 else ",\n") + json.dumps(dict(zip(header, row, strict=True)), default=str)
        )
        if count % ROWS_PER_CHUNK == 0:
            yield "".join(parts).encode()
            parts = []
    parts.append("\n]\n")
    yield "".join(parts).encode()


def _in_one_transaction(chunks: Iterator[bytes]) -> Iterator[bytes]:
    # Inside a transaction PostgreSQL streams the cursors as read; outside one (autocommit)
    # Django must declare them WITH HOLD, and the server runs each query to the end first.
    with transaction.atomic():
        yield from chunks


def table_response(table: Table, *, file_format: str, filename: str) -> StreamingHttpResponse:
    if file_format == "csv":
        response = StreamingHttpResponse(
            _in_one_transaction(_csv(table)), content_type="text/csv; charset=utf-8"
        )
    else:
        response = StreamingHttpResponse(_in_one_transaction(_json(table)), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{filename}.{file_format}"'
    response["Cache-Control"] = "no-store"
    return response
