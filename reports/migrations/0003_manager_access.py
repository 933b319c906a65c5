"""Least-privilege report access: the `view_all_teams` permission (superusers have it
implicitly; give it to staff who must see every team) and the `managers` group whose members
may sign in at /reports/login/ and read the teams of their ManagerScope, nothing else."""

from django.db import migrations

MANAGERS_GROUP = "managers"


def create_managers_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.get_or_create(name=MANAGERS_GROUP)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("reports", "0002_dailyrollup"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="managerscope",
            options={
                "permissions": [("view_all_teams", "Can read the reports of every team")],
                "verbose_name": "report access",
                "verbose_name_plural": "report access",
            },
        ),
        # Kept on the way back: the group may hold members by then.
        migrations.RunPython(create_managers_group, migrations.RunPython.noop),
    ]
