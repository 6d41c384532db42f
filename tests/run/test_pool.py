"""The run's inference pool: when a video waiting for actors gives up."""

from pipeline.run.pool import Heartbeat


def test_inference_gives_up_only_when_every_video_in_flight_waits():
    hb = Heartbeat()
    hb.video(+1)
    hb.video(+1)
    hb.waiting(+1)
    hb._t -= 1000  # no progress for 1,000 s, but the other video is training or restoring
    assert hb.stuck_s() == 0.0
    hb.waiting(+1)  # now both wait for actors that never start
    assert hb.stuck_s() >= 1000
    hb.video(-1)  # a video finished: progress
    hb.waiting(-1)
    assert hb.stuck_s() < 1.0
