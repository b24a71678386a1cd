"""The camera driver on a network camera: the simulator's MJPEG-over-HTTP stream, opened by URL
through OpenCV's FFmpeg backend and decoded by the real decoder (zxing-cpp)."""

from __future__ import annotations

import asyncio
import threading

from gated.drivers.camera import Camera
from gated.validation.token import mint_static
from hw_sim.camstream import MjpegStream
from tests.conftest import until

KEY = bytes(range(32))


def test_a_code_shown_on_the_stream_is_read_once_and_the_camera_comes_back_after_the_stream_drops():
    async def scenario():
        stream = MjpegStream(fps=15)
        await stream.start()
        reads = []
        camera = Camera("in-1/camera", stream.url, reads.append, decoder="zxing",
                        retry_initial_s=0.05, retry_max_s=0.2, repeat_after_s=1.0)
        code = mint_static(KEY, kid=1, ticket_id=5205320758, serial=0)
        try:
            camera.start()
            await until(lambda: camera.stats().connected, timeout=10, what="the camera to open the stream")
            assert reads == []  # the empty scene: nothing to read

            stream.show_code(code)
            await until(lambda: reads, timeout=3, what="the code on the stream to be read")
            assert [r.text for r in reads] == [code] and reads[0].source == "in-1/camera"
            await asyncio.sleep(0.3)
            assert len(reads) == 1  # held in view: one read, not one per frame

            # The camera loses power: the driver says so, and keeps trying.
            port = stream.port
            await stream.stop()
            await until(lambda: not camera.stats().connected, timeout=5, what="the driver to report the camera lost")
            stream.show_blank()

            # It comes back on the same address; a new code is read from it.
            back = MjpegStream(port=port, fps=15)
            await back.start()
            stream = back
            await until(lambda: camera.stats().connected, timeout=10, what="the driver to reconnect")
            second = mint_static(KEY, kid=1, ticket_id=1_000_000 * 3 + 17, serial=1)
            stream.show_code(second, angle_deg=12.0)
            await until(lambda: len(reads) == 2, timeout=3, what="a code after the reconnect")
            assert reads[1].text == second
        finally:
            await asyncio.to_thread(camera.close)
            await stream.stop()
        assert not [t for t in threading.enumerate() if t.name.startswith("camera-in-1")]

    asyncio.run(asyncio.wait_for(scenario(), 60))
