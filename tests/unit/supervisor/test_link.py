"""AgentLink against a fake guest on a unix socket: what reaches a container's CRI log."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from vmcri.agent.framing import FrameKind, FrameReader, encode_frame
from vmcri.api import agent_pb2
from vmcri.ids import new_id
from vmcri.supervisor.link import AgentLink, ContainerRef

LINES = 3000


def serve_output(listener: socket.socket, container_id: str, sent: threading.Event) -> None:
    """Handshake, then every line as two events (the first half has no newline)."""
    conn, _ = listener.accept()
    with conn:
        reader = FrameReader()
        while (frame := reader.next_frame()) is None:
            reader.feed(conn.recv(65536))
        hello = agent_pb2.Hello.FromString(frame.body)
        ack = agent_pb2.HelloAck(nonce=hello.nonce, protocol_version=1)
        conn.sendall(encode_frame(FrameKind.HELLO_ACK, 0, ack.SerializeToString()))
        frames = bytearray()
        seq = 0
        for i in range(LINES):
            for piece in (b"line-", b"%d\n" % i):
                seq += 1
                output = agent_pb2.OutputChunk(
                    container_id=container_id, stream=agent_pb2.OUTPUT_STREAM_STDOUT, data=piece
                )
                event = agent_pb2.Event(seq=seq, output=output)
                frames += encode_frame(FrameKind.EVENT, 0, event.SerializeToString())
        conn.sendall(frames)
        sent.set()
        with_timeout = conn.recv(1)  # until the host hangs up
        del with_timeout


def test_closing_a_link_writes_what_it_received_whole_then_nothing(short_tmp: Path) -> None:
    # A link is dropped while the pod runs (its agent lost, a reconnect): the output it has
    # acknowledged is never sent again, so it must reach the log, in whole records, and
    # nothing may write through the closed link after that, as a new link appends
    sandbox_id, container_id = new_id(), new_id()
    log_path = short_tmp / "c.log"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(short_tmp / "agent.sock"))
    listener.listen(1)
    sent = threading.Event()
    guest = threading.Thread(target=serve_output, args=(listener, container_id, sent), daemon=True)
    guest.start()
    ref = ContainerRef(container_id, sandbox_id, str(log_path))
    link = AgentLink(
        sandbox_id, f"unix://{short_tmp / 'agent.sock'}", lambda *_: None, lambda _: ref
    )
    assert link.client.connected
    assert sent.wait(30)
    link.close()  # events still queued for the log now
    size = log_path.stat().st_size

    lines, partial = [], ""
    for record in log_path.read_text().splitlines():
        _timestamp, stream, tag, text = record.split(" ", 3)
        assert stream == "stdout" and tag in ("P", "F"), record
        if tag == "F":
            lines.append(partial + text)
            partial = ""
        else:
            partial += text
    # Whole lines as sent, in order, as far as the link had received them; a line it had
    # half received is left open for the next link, which the agent sends the rest
    assert len(lines) > 0
    assert lines == [f"line-{i}" for i in range(len(lines))]
    assert partial in ("", "line-")
    link.open_log(container_id)  # a closed link makes no writer again
    guest.join(10)
    assert log_path.stat().st_size == size
    listener.close()
