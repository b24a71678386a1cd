"""The registration systems' API over mTLS: `gated registry serve` with the venue's certificates takes a
client certificate with CN "api:NAME" instead of a token, for the integration NAME and its role."""

import json
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.registry.test_api import attendee

pytestmark = pytest.mark.timeout(90)
GATED = [sys.executable, "-m", "gated"]


def _context(certs, client: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client is not None:
        context.load_cert_chain(str(certs / f"{client}.pem"), str(certs / f"{client}.key"))
    return context


def _call(url: str, context, method: str = "GET", body=None, headers=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, context=context, timeout=20) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"null")


def test_a_registration_system_upserts_and_reads_with_its_client_certificate(tmp_path):
    certs = tmp_path / "certs"
    made = subprocess.run([*GATED, "certs", "make", "--out", str(certs), "--gate-ids", "gate-a",
                           "--api-clients", "crm,shop"], capture_output=True, text=True)
    assert made.returncode == 0 and "2 API client certificate(s)" in made.stdout, made.stderr
    assert (certs / "api-crm.key").stat().st_mode & 0o777 == 0o600
    db = str(tmp_path / "registry.db")
    csv = tmp_path / "a.csv"
    csv.write_text("ticket_id,name,company,category,ticket_type,zones,valid_from,valid_until,max_entries,benefits,phone\n"
                   "5205320758,Wang Fang,ACME,guest,day,hall-a,,,1,,\n")
    assert subprocess.run([*GATED, "registry", "import", str(csv), "--db", db], capture_output=True).returncode == 0
    assert subprocess.run([*GATED, "registry", "tokens", "add", "crm", "--role", "desk", "--db", db],
                          capture_output=True).returncode == 0  # the integration; its token goes unused here
    serve = subprocess.Popen(
        [*GATED, "registry", "serve", "--db", db, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
         "--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(certs / "registry.pem"), "--tls-key", str(certs / "registry.key")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = serve.stdout.readline()
            assert line, serve.stderr.read()
            if match := re.match(r"registry pages at (https://127\.0\.0\.1:\d+/)", line):
                url = match.group(1)
        crm = _context(certs, "api-crm")
        batch = {"attendees": [attendee(5205320759, 1), attendee(1_000_000 * 3 + 17, 2)]}
        status, answer = _call(url + "api/v1/attendees", crm, "PUT", batch)
        assert status == 200, answer
        status, one = _call(url + "api/v1/attendees/5205320759", crm)
        assert status == 200 and one["ticket_id"] == "5205320759"
        status, _ = _call(url + "api/v1/checkins", crm)
        assert status == 200
        # No certificate, a gate's certificate, an integration nobody made: refused, nothing changed.
        for client in (None, "gate-gate-a", "api-shop"):
            status, refused = _call(url + "api/v1/attendees", _context(certs, client), "PUT",
                                    {"attendees": [attendee(42, 3)]})
            assert status == (403 if client is None else 401), (client, refused)  # none: not a page, not signed in
        status, _ = _call(url + "api/v1/attendees/42", crm)
        assert status == 404
        # A browser page's request (it carries an Origin) never signs in by certificate.
        status, _ = _call(url + "api/v1/attendees", crm, "PUT", {"attendees": [attendee(43, 4)]},
                          headers={"Origin": "https://evil.example"})
        assert status in (401, 403)
        # Revoking the integration ends its certificate's access too.
        assert subprocess.run([*GATED, "registry", "tokens", "revoke", "crm", "--db", db],
                              capture_output=True).returncode == 0
        status, refused = _call(url + "api/v1/attendees/5205320759", crm)
        assert status == 401 and "api:crm" in refused["error"]
    finally:
        serve.terminate()
        assert serve.wait(timeout=30) == 0, serve.stderr.read()[-2000:]
