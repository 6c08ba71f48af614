#!/usr/bin/env python3
"""Memory per connection of a proxy on loopback (bench/memory.sh drives it).

  memory.py backend PORT DELAY_MS        a keep-alive HTTP/1.1 backend answering 100 bytes
                                         after DELAY_MS (so a proxy must hold one upstream
                                         connection per request in flight)
  memory.py idle PORT N HOLD_S           opens N client connections to 127.0.0.1:PORT, sends
                                         one request for /local (answered by the proxy
                                         itself) on each, keeps them open HOLD_S seconds
  memory.py burst PORT N                 N requests at once on N connections, then closes

Bounded in connections and time; loopback only."""
import asyncio
import sys

BODY = b"x" * 100


async def backend(port, delay_ms):
    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                await asyncio.sleep(delay_ms / 1000)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + BODY)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


async def one(port, hold, path):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    if hold:
        await asyncio.sleep(hold)
    writer.close()


async def many(port, n, hold, path):
    # Opened in waves so the listen backlog never overflows.
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(one(port, hold, path)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = sum(1 for r in results if isinstance(r, Exception))
    if failed:
        print(f"{failed} of {n} connections failed", file=sys.stderr)


def main():
    mode = sys.argv[1]
    if mode == "backend":
        asyncio.run(backend(int(sys.argv[2]), int(sys.argv[3])))
    elif mode == "idle":
        # A local answer: no upstream connection is opened for these.
        asyncio.run(many(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), b"/local"))
    elif mode == "burst":
        asyncio.run(many(int(sys.argv[2]), int(sys.argv[3]), 0, b"/"))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
