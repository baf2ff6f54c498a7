#!/usr/bin/env python3
"""A local TCP proxy that signs each WebSocket upgrade for Autobahn.

Run with: scripts/autobahn (which starts it); by hand:
  scripts/autobahn-proxy.py LISTEN_PORT CHORUS_PORT USER_ID SID SIGN_KEY

Chorus refuses a WebSocket upgrade without a freshly signed query, and a
query is single-use (PROTOCOL sections 2-4). Autobahn's fuzzing client opens
one connection per case to one fixed URL. This proxy, for each accepted
connection, reads the HTTP request head, replaces its request target with
`/?user_id=..&sid=..&timestamp=<now>&nonce=<fresh>&sign=..` signed with the
user's sign_key (the client's side of section 2: sorted `key=value` joined
with `&`, HMAC-SHA256, lowercase hex), forwards it, and then copies bytes
both ways untouched. Nothing about Chorus's configuration is relaxed: every
connection passes the production signature, freshness and single-use checks.
Standard library only.
"""

import asyncio
import hashlib
import hmac
import secrets
import sys
import time


def signed_target(user_id, sid, sign_key):
    """The request target with a fresh signed query."""
    params = {
        "user_id": str(user_id),
        "sid": sid,
        "timestamp": str(int(time.time())),
        "nonce": secrets.token_hex(12),
    }
    canonical = "&".join(
        f"{k}={params[k]}" for k in sorted(params, key=lambda k: k.encode())
    )
    sign = hmac.new(sign_key.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    # Every value is [0-9a-z.]: nothing to percent-encode.
    return "/?" + "&".join(f"{k}={v}" for k, v in params.items()) + f"&sign={sign}"


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def handle(client_reader, client_writer, upstream_port, user_id, sid, sign_key):
    try:
        head = await client_reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        client_writer.close()
        return
    request_line, _, rest = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) == 3:
        parts[1] = signed_target(user_id, sid, sign_key).encode()
    head = b" ".join(parts) + b"\r\n" + rest
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        client_writer.close()
        return
    up_writer.write(head)
    await asyncio.gather(
        pipe(client_reader, up_writer), pipe(up_reader, client_writer)
    )
    for w in (up_writer, client_writer):
        w.close()


async def main():
    listen_port, upstream_port, user_id, sid, sign_key = sys.argv[1:6]
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, int(upstream_port), user_id, sid, sign_key),
        "127.0.0.1",
        int(listen_port),
    )
    print(f"autobahn-proxy: 127.0.0.1:{listen_port} -> 127.0.0.1:{upstream_port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
