"""A Duckiebot camera over DTPS for the depth-live tests, served the way a robot's switchboard does.

dtps-http's own server on 127.0.0.1 creates the queue ``<robot>/sensor/camera/front_center/jpeg``
(the topic duckietown-sdk's DB21M/DB21J camera subscribes to) and publishes each JPEG as a CBOR
``duckietown_messages`` ``CompressedImage`` (header with frame and timestamp, format "jpeg", data).

    python3 dtps_camera_server.py PORT ROBOT COUNT RATE FRAME.jpg [FRAME.jpg ...] [--close-after]

Prints ``ready`` once the queue exists and ``published N`` at the end. It publishes COUNT frames
(cycling through the files) at RATE Hz; with ``--close-after`` the process then ends, so its
sockets close (the robot went away); otherwise it stays up to ``LINGER`` seconds more, serving
nothing new, until it is terminated. Bounded in frames and time, localhost only.
"""
import argparse
import asyncio
import signal
import sys
import time

from dtps import context
from duckietown_messages.sensors.compressed_image import CompressedImage
from duckietown_messages.standard.header import Header

LINGER = 120.0


async def serve(args: argparse.Namespace, frames) -> int:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    # the context's name may not contain "_": dtps splits DTPS_BASE_<name>_<n> there
    ctx = await context("switchboard%d" % args.port, urls=["create:http://127.0.0.1:%d/" % args.port])
    published = 0
    try:
        queue = await ctx.navigate(args.robot, "sensor", "camera", "front_center", "jpeg").queue_create()
        print("ready", flush=True)
        for i in range(args.count):
            header = Header(frame="/%s/camera_optical_frame" % args.robot, timestamp=time.time())
            message = CompressedImage(header=header, format="jpeg", data=frames[i % len(frames)])
            await queue.publish(message.to_rawdata())
            published += 1
            if await _stopped(stop, 1.0 / args.rate):
                break
        if not args.close_after:
            await _stopped(stop, LINGER)
    finally:
        print("published %d" % published, flush=True)
        await ctx.aclose()
    return 0


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("robot")
    parser.add_argument("count", type=int)
    parser.add_argument("rate", type=float)
    parser.add_argument("frames", nargs="+")
    parser.add_argument("--close-after", action="store_true")
    args = parser.parse_args()
    frames = []
    for path in args.frames:
        with open(path, "rb") as f:
            frames.append(f.read())
    return asyncio.run(serve(args, frames))


if __name__ == "__main__":
    sys.exit(main())
