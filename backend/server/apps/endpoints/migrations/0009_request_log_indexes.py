"""Indexes for the request log's filters at any size: (algorithm, -id) takes over from
the foreign key's own index (made first, so a lookup by algorithm always has one), and a
partial index on the requests with feedback."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("endpoints", "0008_batch_jobs"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="mlrequest",
            index=models.Index(fields=["parent_mlalgorithm", "-id"], name="mlrequest_by_algorithm"),
        ),
        migrations.AddIndex(
            model_name="mlrequest",
            index=models.Index(
                condition=models.Q(("feedback__isnull", False)),
                fields=["-id"],
                name="mlrequest_with_feedback",
            ),
        ),
        migrations.AlterField(
            model_name="mlrequest",
            name="parent_mlalgorithm",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="requests",
                to="endpoints.mlalgorithm",
            ),
        ),
    ]
