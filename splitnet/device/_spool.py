"""The device-side spool: unanswered frames on disk, so a killed daemon resumes.

Under ``--out`` the daemon keeps ``.spool/NNNNNNNN.req`` (each frame's serialized
request, written atomically *before* it is sent, removed once its result is
written) and ``state.json`` (the device id and the next frame to capture). A
daemon started again with the same ``--out`` takes the same device id, writes no
result twice (a spooled frame whose result is already there is dropped),
re-sends the spooled requests byte for byte (the server answers a frame it has
already run from its cache, so the tail does not run it again) and goes on from
the next frame.

Bound and policy: the spool holds at most ``window`` frames, the frames in
flight. When it is full the daemon stops reading frames: back-pressure on a
file, folder or synthetic source; a live camera's frames are dropped (and
counted in ``dropped``), as when the network is slow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["Spool"]


class Spool:
    def __init__(self, out: Path) -> None:
        self.dir = out / ".spool"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = out / "state.json"
        for stale in self.dir.glob("*.tmp"):  # a write cut by a kill: never sent
            stale.unlink()

    def state(self) -> dict:
        """``{"device_id", "next_frame", "running"}`` of the last run, or ``{}``."""
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, **state) -> None:
        _atomic_bytes(self.state_path, json.dumps(state).encode())

    def pending(self) -> list[tuple[int, bytes]]:
        """The spooled frames, by frame id."""
        out = []
        for p in sorted(self.dir.glob("*.req")):
            if p.stem.isdigit():
                out.append((int(p.stem), p.read_bytes()))
        return out

    def put(self, frame_id: int, request: bytes) -> None:
        _atomic_bytes(self.dir / f"{frame_id:08d}.req", request)

    def ack(self, frame_id: int) -> None:
        (self.dir / f"{frame_id:08d}.req").unlink(missing_ok=True)


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
