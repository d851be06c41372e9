"""README's "Bring your own backend" example runs as written, and shows what it says:
nosend's SMTP session, unchanged, with a backend that is not nosend's."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _backend_example() -> str:
    text = README.read_text()
    section = text.split("## Bring your own backend", 1)
    assert len(section) == 2, "README.md lost its 'Bring your own backend' section"
    blocks = re.findall(r"```python\n(.*?)```", section[1].split("\n## ", 1)[0], re.S)
    assert len(blocks) == 1, "the section should hold exactly one python example"
    return blocks[0]


def test_readme_backend_example_runs_and_delivers_to_its_own_backend() -> None:
    namespace: dict[str, object] = {}
    exec(compile(_backend_example(), "README.md", "exec"), namespace)  # noqa: S102
    inbox = namespace["inbox"]
    # The example's own asserts passed; check the session really used the backend given
    # (not nosend's Maildirs): exactly the one accepted message is in its list.
    assert inbox.messages == [b"Subject: hi\r\n\r\n.a dot-stuffed line\r\n"]
    wire = namespace["wire"]
    assert isinstance(wire, bytes) and wire.startswith(b"220 ")
    assert b"\r\n221 " in wire
