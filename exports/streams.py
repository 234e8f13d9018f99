"""Streaming CSV and JSON responses: rows are written as they come, never held in memory."""

import csv
import json
from collections.abc import Iterator

from django.http import StreamingHttpResponse

from .selectors import Table

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    def write(self, value: str) -> str:
        return value


def _safe(cell):
    # A cell that a spreadsheet would run as a formula is quoted with a leading apostrophe.
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def _csv(table: Table) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(table.header)
    for row in table.rows:
        yield writer.writerow([_safe(cell) for cell in row])


def _json(table: Table) -> Iterator[str]:
    yield "["
    first = True
    for row in table.rows:
        yield (
            ("" if first else ",") + "\n" + json.dumps(dict(zip(table.header, row, strict=True)), default=str)
        )
        first = False
    yield "\n]\n"


def table_response(table: Table, *, file_format: str, filename: str) -> StreamingHttpResponse:
    if file_format == "csv":
        response = StreamingHttpResponse(_csv(table), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(_json(table), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{filename}.{file_format}"'
    response["Cache-Control"] = "no-store"
    return response
