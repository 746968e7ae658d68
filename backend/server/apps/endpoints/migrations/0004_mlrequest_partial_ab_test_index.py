"""Index MLRequest.ab_test only where it is set (most requests belong to no A/B test).

The database side drops the foreign key's own index and creates the partial one; the
state side records db_index=False. Written by hand: the AlterField that makemigrations
writes would copy the whole table on SQLite and re-validate the foreign key on
PostgreSQL, for a change that only concerns an index.
"""

import django.db.models.deletion
from django.db import migrations, models

OLD_INDEX = "endpoints_mlrequest_ab_test_id_732c578e"


class Migration(migrations.Migration):
    dependencies = [
        ("endpoints", "0003_model_card"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="mlrequest",
                    name="ab_test",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="requests",
                        to="endpoints.abtest",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{OLD_INDEX}"',
                    reverse_sql=(
                        f'CREATE INDEX "{OLD_INDEX}" ON "endpoints_mlrequest" ("ab_test_id")'
                    ),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="mlrequest",
            index=models.Index(
                condition=models.Q(("ab_test__isnull", False)),
                fields=["ab_test"],
                name="mlrequest_ab_test_routed",
            ),
        ),
    ]
