from django.db import migrations

from accounts.roles import roles_sync


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_grading_roles"),
        ("grading", "0003_grades_per_eye_and_consensus"),
    ]

    operations = [migrations.RunPython(roles_sync, migrations.RunPython.noop)]
