"""Feedback integrity: who made a request, the feedback's audit, and each algorithm's
classes (feedback is checked against them).

Every algorithm registered before this migration is an Adult income classifier (the only
kind the service could serve), so their classes are filled in here.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

ADULT_WRAPPERS = ("income_classifier", "random_forest", "extra_trees")
ADULT_CLASSES = ["<=50K", ">50K"]


def fill_adult_classes(apps, schema_editor):  # type: ignore[no-untyped-def]
    MLAlgorithm = apps.get_model("endpoints", "MLAlgorithm")
    MLAlgorithm.objects.filter(wrapper__in=ADULT_WRAPPERS).update(classes=ADULT_CLASSES)


class Migration(migrations.Migration):
    dependencies = [
        ("endpoints", "0004_mlrequest_partial_ab_test_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="FeedbackRevision",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("feedback", models.CharField(max_length=128)),
                ("given_at", models.DateTimeField(blank=True, null=True)),
                ("given_by", models.CharField(blank=True, max_length=200)),
                ("given_via", models.CharField(blank=True, max_length=16)),
                ("replaced_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "ordering": ["-replaced_at", "-id"],
            },
        ),
        migrations.AddField(
            model_name="mlalgorithm",
            name="classes",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="mlalgorithm",
            name="task",
            field=models.CharField(
                choices=[("classification", "Classification"), ("regression", "Regression")],
                default="classification",
                max_length=32,
            ),
        ),
        migrations.AddField(
            model_name="mlrequest",
            name="feedback_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="mlrequest",
            name="feedback_by",
            field=models.CharField(blank=True, max_length=200, null=True),
        ),
        migrations.AddField(
            model_name="mlrequest",
            name="feedback_via",
            field=models.CharField(blank=True, max_length=16, null=True),
        ),
        migrations.AddField(
            model_name="mlrequest",
            name="user",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddIndex(
            model_name="mlrequest",
            index=models.Index(
                condition=models.Q(("user__isnull", False)),
                fields=["user", "-id"],
                name="mlrequest_by_user",
            ),
        ),
        migrations.AddField(
            model_name="feedbackrevision",
            name="request",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="revisions",
                to="endpoints.mlrequest",
            ),
        ),
        migrations.RunPython(fill_adult_classes, migrations.RunPython.noop),
    ]
