"""A consumer in its own process, for the tests: ``python -m tests.distribution.consumer_process``.

Prints ``ready`` once connected, then one JSON line per event received:
``{"event": <codec JSON>, "position": <position() after it, or null in a group>}``,
flushed, so that a test which kills the process with SIGKILL knows exactly what
it had processed, and from which position to resume. It exits after the
publisher's "stopped" announcement, or, in a consumer group (where that
announcement reaches one member only), when its stdin closes; it then prints
``{"statistics": {...}}``.
"""

from __future__ import annotations

import argparse
import sys

import attrs
import orjson
import trio

from puffin_trio import SessionState, Status, codec, open_redis_feed


def _emit(line: dict[str, object]) -> None:
    sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
    sys.stdout.buffer.flush()


async def main(args: argparse.Namespace) -> None:
    options: dict[str, object] = {"prefix": args.prefix, "start": args.start}
    if args.group:
        options.update(group=args.group, consumer=args.consumer, claim_idle=args.claim_idle)
    if args.symbols:
        options["symbols"] = args.symbols.split(",")
    async with open_redis_feed(args.url, **options) as feed:  # type: ignore[arg-type]
        _emit({"ready": True})
        async with trio.open_nursery() as nursery:
            if args.group:

                async def until_stdin_closes() -> None:
                    await trio.to_thread.run_sync(sys.stdin.buffer.read)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_stdin_closes)
            async for event in feed:
                position = None if args.group else feed.position()
                _emit({"event": orjson.loads(codec.dumps(event)), "position": position})
                if args.delay:
                    await trio.sleep(args.delay)
                if (
                    isinstance(event, Status)
                    and event.provider == "puffin"
                    and event.state is SessionState.CLOSED
                    and not args.group
                ):
                    break
            nursery.cancel_scope.cancel()
        statistics = attrs.asdict(feed.feed_statistics(), recurse=True)
    _emit({"statistics": statistics})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--prefix", default="puffin")
    parser.add_argument("--start", default="earliest")
    parser.add_argument("--group")
    parser.add_argument("--consumer")
    parser.add_argument("--claim-idle", type=float, default=30.0)
    parser.add_argument("--symbols")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of work per event")
    trio.run(main, parser.parse_args())
