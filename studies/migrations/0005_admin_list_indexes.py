"""Indexes the admin lists need to stay fast at any size, on PostgreSQL (SQLite's small databases do
without): a patient's code found by its beginning, whatever the case (the patients list's search).

Plain SQL: a prefix search needs an expression index with the `text_pattern_ops` operator class,
which only PostgreSQL has.
"""

from django.db import migrations

INDEXES = {
    "patient_code_upper_prefix": "studies_patient (upper(code::text) text_pattern_ops)",
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, target in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {target}")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("studies", "0004_import_chunks")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
