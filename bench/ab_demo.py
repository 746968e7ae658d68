"""The design's A/B procedure against a running server, over HTTP only (standard library).

Creates an A/B test between the random forest and the extra trees of ``income_classifier``,
sends N records of the Adult test split to ``predict?status=ab_testing`` (each with its own
``X-Assignment-Key``), PUTs each record's true label as feedback, stops the test and prints
the summary. Staff credentials go by HTTP Basic.

    AB_DEMO_USER=admin AB_DEMO_PASSWORD=pw .venv/bin/python bench/ab_demo.py \\
        http://127.0.0.1:8000 -n 500
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ADULT_TEST = Path(__file__).resolve().parent.parent / "research" / "data" / "adult" / "adult.test"
FEATURES = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
]


class Client:
    def __init__(self, base_url: str, user: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.staff = {"Authorization": f"Basic {token}"}

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        staff: bool = False,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base_url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                **(self.staff if staff else {}),
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


def records(n: int) -> list[tuple[dict[str, str], str]]:
    """The first ``n`` complete rows of adult.test with their labels ('>50K.' -> '>50K')."""
    rows = []
    with ADULT_TEST.open(newline="") as f:
        for row in csv.reader(f, skipinitialspace=True):
            if len(row) != len(FEATURES) + 1:
                continue  # the '|1x3 Cross validator' header and blank lines
            rows.append((dict(zip(FEATURES, row[:-1], strict=True)), row[-1].rstrip(".")))
            if len(rows) == n:
                break
    return rows


def expect(status: int, body: Any, wanted: int, what: str) -> Any:
    if status != wanted:
        sys.exit(f"{what} failed with HTTP {status}: {json.dumps(body)}")
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("-n", type=int, default=500, help="records of adult.test to send")
    parser.add_argument("--user", default=os.environ.get("AB_DEMO_USER", "admin"))
    parser.add_argument("--password", default=os.environ.get("AB_DEMO_PASSWORD"))
    args = parser.parse_args()
    if not args.password:
        sys.exit("Pass --password or set AB_DEMO_PASSWORD (a staff user's password).")
    api = Client(args.base_url, args.user, args.password)

    page = expect(*api.call("GET", "/api/v1/mlalgorithms"), 200, "Listing algorithms")
    by_name = {a["name"]: a for a in page["results"]}
    rf, et = by_name["random forest"], by_name["extra trees"]
    body = {
        "title": f"random forest vs extra trees, {args.n} records of adult.test",
        "parent_mlalgorithm_1": rf["id"],
        "parent_mlalgorithm_2": et["id"],
    }
    test = expect(*api.call("POST", "/api/v1/abtests", body, staff=True), 201, "Create")
    print(f"A/B test {test['id']} created; report: {test['report_url']}")

    for i, (record, label) in enumerate(records(args.n)):
        served = expect(
            *api.call(
                "POST",
                "/api/v1/income_classifier/predict?status=ab_testing",
                record,
                headers={"X-Assignment-Key": f"person-{i}"},
            ),
            200,
            "Predict",
        )
        expect(
            *api.call(
                "PUT",
                f"/api/v1/mlrequests/{served['request_id']}",
                {"feedback": label, "feedback_token": served["feedback_token"]},
            ),
            200,
            "Feedback",
        )
    print(f"{args.n} predictions sent, each with its true label as feedback")

    status, stopped = api.call("POST", f"/api/v1/stop_ab_test/{test['id']}", {}, staff=True)
    if status != 200:
        sys.exit(f"Stop answered HTTP {status}: {stopped['error']['message']}")
    print(f"\nA/B test {stopped['id']} {stopped['state']}:\n{stopped['summary']}")
    print(f"\nReport: {stopped['report_url']}")


if __name__ == "__main__":
    main()
