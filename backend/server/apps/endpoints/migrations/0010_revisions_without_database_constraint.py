"""Feedback revisions keep their link to the request in Django only: PostgreSQL no longer
checks the revisions table for every log row retention deletes (see models.FeedbackRevision)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("endpoints", "0009_request_log_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="feedbackrevision",
            name="request",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="revisions",
                to="endpoints.mlrequest",
            ),
        ),
    ]
