#!/usr/bin/env python3
"""Prints 20 000 signed PUT URLs (small/r<REP>/<i>.bin), one per line, ittybit-style:
?expiry=<now+1h>&method=put&signature=base64url_nopad(HMAC-SHA256(key, "<path>?expiry=..&method=put")).
A process per URL (examples/sign.rs) would take longer than the run it feeds.

usage: small_urls.py BASE_URL KEY REP
"""
import base64, hashlib, hmac, sys, time

base, key, rep = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
exp = int(time.time()) + 3600
for i in range(20000):
    p = f"small/r{rep}/{i}.bin"
    m = f"{p}?expiry={exp}&method=put".encode()
    s = base64.urlsafe_b64encode(hmac.new(key, m, hashlib.sha256).digest()).rstrip(b"=").decode()
    print(f"{base}/{p}?expiry={exp}&method=put&signature={s}")
