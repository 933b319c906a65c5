"""On PostgreSQL the ledger's table becomes partitioned by UTC day (gateway/partitions.py):
the old table is kept as one partition, so no row is copied; its primary key is rebuilt
on (id, created_at). Elsewhere (SQLite) nothing changes. docs/operations.md, "The ledger's
partitions", says how long it locks the table and how to run it ahead of a deploy."""

from django.db import migrations


def partition(apps, schema_editor):
    from gateway import partitions

    partitions.convert()


class Migration(migrations.Migration):
    atomic = True
    dependencies = [("gateway", "0015_ledger_indexes_for_partitions")]
    operations = [migrations.RunPython(partition, elidable=False)]
