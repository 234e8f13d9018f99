"""The database cache's table, so that `migrate` alone readies the shared throttling cache."""

from django.conf import settings
from django.core.management import call_command
from django.db import migrations


def cache_table_create(apps, schema_editor):
    call_command("createcachetable", settings.CACHE_TABLE, database=schema_editor.connection.alias, verbosity=0)


def cache_table_drop(apps, schema_editor):
    schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(settings.CACHE_TABLE)}")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0003_adjudicators")]

    operations = [migrations.RunPython(cache_table_create, cache_table_drop)]
