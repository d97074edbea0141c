"""Flow control between the SLAM process and a replay source: FrameCredit over a real PUB/SUB pair."""

from __future__ import annotations

import threading
import time

from slam.bus.messages import FrameCredit, frame_credit_message
from slam.bus.pubsub import Publisher
from slam.nodes.source import Credit


def _wait(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()


def test_source_sends_only_against_credit_and_sees_the_end_taken(tmp_path):
    url = f"ipc://{tmp_path}/poses"
    pub = Publisher(None, url)
    credit = Credit(url)
    stop = threading.Event()
    try:
        # the SLAM process re-sends its credit until the source (a late subscriber) has it
        assert _wait(lambda: (pub.publish(frame_credit_message(FrameCredit(0, 2))), credit.poll(20),
                              credit.granted == 2)[-1])
        assert credit.wait_for_frame(0, stop) and credit.wait_for_frame(1, stop)
        allowed = threading.Event()
        t = threading.Thread(target=lambda: credit.wait_for_frame(2, stop) and allowed.set())
        t.start()
        time.sleep(0.3)
        assert not allowed.is_set()  # frame 2 waits for credit ...
        pub.publish(frame_credit_message(FrameCredit(1, 1)))  # an old, smaller credit changes nothing
        pub.publish(frame_credit_message(FrameCredit(1, 3)))  # ... and goes once the SLAM process took one
        t.join(5.0)
        assert allowed.is_set() and (credit.taken, credit.granted) == (1, 3) and not credit.end_taken
        waiting = threading.Thread(target=credit.wait_for_frame, args=(3, stop))
        waiting.start()
        stop.set()  # a stop request ends the wait
        waiting.join(5.0)
        assert not waiting.is_alive() and not credit.wait_for_frame(3, stop)
        pub.publish(frame_credit_message(FrameCredit(3, 7, end_taken=True)))
        assert _wait(lambda: (credit.poll(20), credit.end_taken)[-1])
    finally:
        credit.close()
        pub.close()


def test_without_a_credit_endpoint_the_source_is_not_held_back():
    credit = Credit(None)  # the SLAM process's poses endpoint is CURVE-protected: no flow control
    assert credit.wait_for_frame(100, threading.Event())
    credit.close()
