"""ittybit's official Python SDK (PyPI `ittybit==1.0.0`) against the demo server.

Run by tests/interop/run_sdk.sh, which starts `examples/server` and passes
`--base URL --key KEY` (and `--private` when the server runs with `--private`).

What is checked (PROTOCOL.md §2, §3, §6, §8):
  * `client.signatures.create(...)` (the SDK's own `POST /signatures` call) with folder, with
    expiry, without folder, without method; the returned fields, and the signature recomputed
    here (HMAC-SHA256 over "<path>?expiry=<e>&method=<m>", base64url without padding);
  * a PUT of a small real PNG to the signed URL (no Authorization header), in both response
    styles (envelope without Accept-Version, bare object with Accept-Version: 2025-08-20),
    the body validated by the SDK's own pydantic model `ittybit.types.file.File`;
  * delivery of the stored bytes (plain GET when public, 401 when private) and through a
    `get` signature made by the SDK;
  * errors: a wrong API key through the SDK (ApiError, 401 token_invalid); a tampered
    signature (403 signature_invalid); an expired one (403 signature_expired).

Only the standard library and the SDK (with its httpx/pydantic) are used. The closing line is
"N passed, N failed"; the exit code is 1 when anything failed.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import struct
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import zlib

from ittybit import Ittybit
from ittybit.core.api_error import ApiError
from ittybit.core.pydantic_utilities import IS_PYDANTIC_V2
from ittybit.signatures.types.signatures_create_response import SignaturesCreateResponse
from ittybit.types.file import File

FOLDER = "interop/x"
FILENAME = "sdk.png"
NEW_STYLE = "2025-08-20"

PASSED: list[str] = []
FAILED: list[str] = []


def check(name: str, cond: bool, detail: object = "") -> bool:
    if cond:
        PASSED.append(name)
        print(f"  ok    {name}")
    else:
        FAILED.append(name)
        print(f"  FAIL  {name}" + (f": {detail}" if detail != "" else ""))
    return cond


def section(title: str):
    """Runs a block of checks; an exception inside counts as one failure and the run goes on."""

    class _S:
        def __enter__(self):
            print(f"\n== {title}")

        def __exit__(self, et, ev, tb):
            if et is None:
                return False
            FAILED.append(f"{title}: {et.__name__}")
            print(f"  FAIL  {title}: unexpected {et.__name__}: {ev}")
            traceback.print_exception(et, ev, tb, limit=4)
            return True  # swallow, go on with the next section

    return _S()


# ---------------------------------------------------------------------------------------------
# helpers


def make_png(width: int = 3, height: int = 2) -> bytes:
    """A real 8-bit RGB PNG of width x height pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes(((x * 80) % 256, (y * 120) % 256, 200)) for x in range(width))
        for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def sign(key: str, path: str, expiry: int, method: str) -> str:
    msg = f"{path}?expiry={expiry}&method={method}".encode()
    mac = hmac.new(key.encode(), msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


class Resp:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.body[:300]!r}>"


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> Resp:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Resp(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Resp(e.code, e.headers, e.read())


def validate(model, obj):
    """Strict validation with the SDK's model (the SDK itself only `construct`s, unchecked)."""
    if IS_PYDANTIC_V2:
        return model.model_validate(obj)
    return model.parse_obj(obj)


def error_kind(resp: Resp):
    try:
        j = resp.json()
    except ValueError:
        return None
    if isinstance(j, dict) and isinstance(j.get("error"), dict):  # envelope
        return j["error"].get("kind")
    return j.get("kind") if isinstance(j, dict) else None


# ---------------------------------------------------------------------------------------------
# the checks


def check_signature(sig, key: str, base: str, *, filename: str, folder, method: str, expiry=None):
    path = f"{folder}/{filename}" if folder else filename
    check(f"{path} {method}: filename echoed", sig.filename == filename, sig.filename)
    check(f"{path} {method}: folder echoed", sig.folder == folder, sig.folder)
    check(f"{path} {method}: method", sig.method == method, sig.method)
    check(f"{path} {method}: domain is a non-empty string", isinstance(sig.domain, str) and sig.domain != "", sig.domain)
    check(f"{path} {method}: domain appears in url", isinstance(sig.domain, str) and sig.domain in sig.url, (sig.domain, sig.url))
    if expiry is not None:
        check(f"{path} {method}: expiry echoed", sig.expiry == expiry, sig.expiry)
    else:
        now = int(time.time())
        check(
            f"{path} {method}: default expiry is about now + 3600",
            isinstance(sig.expiry, int) and now + 3600 - 120 <= sig.expiry <= now + 3600 + 120,
            (sig.expiry, now),
        )
    u = urllib.parse.urlsplit(sig.url)
    b = urllib.parse.urlsplit(base)
    check(f"{path} {method}: url scheme+host is the base url's", (u.scheme, u.netloc) == (b.scheme, b.netloc), sig.url)
    check(f"{path} {method}: url path is /<folder>/<filename>", u.path == b.path.rstrip("/") + "/" + path, u.path)
    check(f"{path} {method}: url has expiry=", f"expiry={sig.expiry}" in u.query, u.query)
    check(f"{path} {method}: url has method={method}", f"method={method}" in u.query, u.query)
    check(f"{path} {method}: url has signature=", f"signature={sig.signature}" in u.query, u.query)
    names = [kv.split("=", 1)[0] for kv in u.query.split("&")]
    check(f"{path} {method}: query order expiry, method, signature", names == ["expiry", "method", "signature"], names)
    want = sign(key, path, sig.expiry, method)
    check(f"{path} {method}: signature = base64url(HMAC-SHA256(key, path?expiry&method))", sig.signature == want, (sig.signature, want))


def check_file(f: File, png: bytes, label: str):
    check(f"{label}: id file_…", f.id.startswith("file_") and len(f.id) >= 17, f.id)
    check(f"{label}: media_id med_…", f.media_id.startswith("med_"), f.media_id)
    check(f"{label}: object == source", f.object == "source", f.object)
    check(f"{label}: kind == image", f.kind == "image", f.kind)
    check(f"{label}: type == image/png", f.type == "image/png", f.type)
    check(f"{label}: width == 3", f.width == 3, f.width)
    check(f"{label}: height == 2", f.height == 2, f.height)
    check(f"{label}: filesize == {len(png)}", f.filesize == len(png), f.filesize)
    check(f"{label}: folder == {FOLDER}", f.folder == FOLDER, f.folder)
    check(f"{label}: filename == {FILENAME}", f.filename == FILENAME, f.filename)
    check(f"{label}: status == ready", f.status == "ready", f.status)
    check(
        f"{label}: created/updated are tz-aware datetimes",
        isinstance(f.created, dt.datetime) and f.created.tzinfo is not None
        and isinstance(f.updated, dt.datetime) and f.updated.tzinfo is not None,
        (f.created, f.updated),
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the server's base url, e.g. http://127.0.0.1:8080")
    ap.add_argument("--key", required=True, help="an API key the server accepts")
    ap.add_argument("--private", action="store_true", help="the server runs with --private")
    args = ap.parse_args()
    base, key = args.base.rstrip("/"), args.key
    mode = "private" if args.private else "public"
    print(f"ittybit SDK interop against {base} ({mode} delivery), pydantic v{'2' if IS_PYDANTIC_V2 else '1'}")

    client = Ittybit(api_key=key, base_url=base)
    png = make_png(3, 2)
    file_url = None
    put_sig = None

    with section("signatures.create(filename, folder, method='put')"):
        put_sig = client.signatures.create(filename=FILENAME, folder=FOLDER, method="put")
        check("returns SignaturesCreateResponse", isinstance(put_sig, SignaturesCreateResponse), type(put_sig))
        # the SDK does not validate (construct_type); validate the raw body strictly
        raw = client.signatures.with_raw_response.create(filename=FILENAME, folder=FOLDER, method="put")
        validate(SignaturesCreateResponse, raw._response.json())
        check("raw body validates as SignaturesCreateResponse", True)
        check("status 200", raw._response.status_code == 200, raw._response.status_code)
        check_signature(put_sig, key, base, filename=FILENAME, folder=FOLDER, method="put")

    with section("signatures.create(..., expiry=E)"):
        e = int(time.time()) + 600
        s = client.signatures.create(filename=FILENAME, folder=FOLDER, method="put", expiry=e)
        check_signature(s, key, base, filename=FILENAME, folder=FOLDER, method="put", expiry=e)

    with section("signatures.create(filename) without folder; without method (default get)"):
        s = client.signatures.create(filename="top.png", method="put")
        check_signature(s, key, base, filename="top.png", folder=None, method="put")
        s = client.signatures.create(filename="top.png", folder=None, method="put")  # sends "folder": null
        check_signature(s, key, base, filename="top.png", folder=None, method="put")
        s = client.signatures.create(filename=FILENAME, folder=FOLDER)
        check_signature(s, key, base, filename=FILENAME, folder=FOLDER, method="get")

    with section("Ittybit(version=...) (the SDK sends it as header ACCEPT_VERSION)"):
        s = Ittybit(api_key=key, base_url=base, version=NEW_STYLE).signatures.create(filename=FILENAME, folder=FOLDER, method="put")
        check_signature(s, key, base, filename=FILENAME, folder=FOLDER, method="put")

    for style, hdrs in (("envelope", {}), ("bare", {"Accept-Version": NEW_STYLE})):
        with section(f"PUT png to the signed url, {style} response"):
            assert put_sig is not None, "no signature from the first section"
            r = http("PUT", put_sig.url, png, {"Content-Type": "image/png", **hdrs})
            check("status 201", r.status == 201, r)
            j = r.json()
            if style == "envelope":
                check("envelope has meta, data, error, links", all(k in j for k in ("meta", "data", "error", "links")), list(j))
                check("envelope error is null", j.get("error") is None, j.get("error"))
                obj = j["data"]
            else:
                check("bare body is the File object (no envelope)", "data" not in j and "id" in j, list(j))
                obj = j
            f = validate(File, obj)
            check("body validates as ittybit.types.file.File", isinstance(f, File))
            check_file(f, png, style)
            check("url is under the base url", f.url.startswith(base + "/"), f.url)
            check("url has no query", "?" not in f.url, f.url)
            check("Location == url", r.headers.get("Location") == f.url, (r.headers.get("Location"), f.url))
            file_url = f.url

    with section(f"GET the file url ({mode})"):
        assert file_url is not None, "no upload succeeded"
        r = http("GET", file_url)
        if args.private:
            check("unsigned GET → 401", r.status == 401, r)
            check("kind token_missing", error_kind(r) == "token_missing", r)
        else:
            check("status 200", r.status == 200, r)
            check("bytes equal", r.body == png, len(r.body))
            check("Content-Type image/png", r.headers.get("Content-Type") == "image/png", r.headers.get("Content-Type"))
            check("ETag present", bool(r.headers.get("ETag")), dict(r.headers))
            r = http("HEAD", file_url)
            check("HEAD 200, Content-Length", r.status == 200 and r.headers.get("Content-Length") == str(len(png)), r)

    with section("signed GET via signatures.create(method='get')"):
        s = client.signatures.create(filename=FILENAME, folder=FOLDER, method="get")
        check_signature(s, key, base, filename=FILENAME, folder=FOLDER, method="get")
        r = http("GET", s.url)
        check("status 200", r.status == 200, r)
        check("bytes equal", r.body == png, len(r.body))
        r = http("HEAD", s.url)
        check("HEAD with a get signature → 200", r.status == 200, r)
        r = http("PUT", s.url, png, {"Content-Type": "image/png"})
        check("PUT with a get signature → 403 signature_invalid", r.status == 403 and error_kind(r) == "signature_invalid", r)

    with section("errors"):
        try:
            Ittybit(api_key="wrong", base_url=base).signatures.create(filename="x")
            check("wrong key raises ApiError", False, "no exception")
        except ApiError as e:
            check("wrong key raises ApiError with status_code 401", e.status_code == 401, e)
            kind = e.body.get("kind") if isinstance(e.body, dict) else None
            check("ApiError body kind token_invalid", kind == "token_invalid", e.body)
        assert put_sig is not None
        bad = put_sig.url.replace(f"signature={put_sig.signature}", "signature=" + sign("not-the-key", f"{FOLDER}/{FILENAME}", put_sig.expiry, "put"))
        r = http("PUT", bad, png, {"Content-Type": "image/png", "Accept-Version": NEW_STYLE})
        check("tampered signature → 403 signature_invalid", r.status == 403 and error_kind(r) == "signature_invalid", r)
        past = int(time.time()) - 60
        expired = f"{base}/{FOLDER}/{FILENAME}?expiry={past}&method=put&signature={sign(key, f'{FOLDER}/{FILENAME}', past, 'put')}"
        r = http("PUT", expired, png, {"Content-Type": "image/png", "Accept-Version": NEW_STYLE})
        check("expired signature → 403 signature_expired", r.status == 403 and error_kind(r) == "signature_expired", r)
        r = http("PUT", f"{base}/{FOLDER}/{FILENAME}", png, {"Content-Type": "image/png", "Accept-Version": NEW_STYLE})
        check("no credentials → 401 token_missing", r.status == 401 and error_kind(r) == "token_missing", r)
        r = http("GET", file_url or f"{base}/{FOLDER}/{FILENAME}")
        check("rejected PUTs left the file as it was", args.private or r.body == png, len(r.body))

    print()
    for name in FAILED:
        print(f"  failed: {name}")
    print(f"sdk_interop: {len(PASSED)} passed, {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
