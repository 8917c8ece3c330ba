"""The README's `.venv/bin/jupyter lab notebooks/` starts, serves JupyterLab and runs the kit's kernel.

The same JupyterLab serves the kit in the container (the Dockerfile's CMD) and
in a Codespace, so a package of the lock that breaks JupyterLab breaks them
all. One did:
tensorflow-privacy's pin packaging~=22.0 stopped JupyterLab 4.5 at start-up
with "cannot import name 'InvalidName' from 'packaging.utils'" (see
requirements/overrides.txt). This test starts the real server on loopback,
loads its page, and starts the kit's kernel, runs a cell in it over its
WebSocket channel as JupyterLab does, and stops it.
"""

import json
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import websocket  # websocket-client, which jupyter-server needs

from tutorial_helpers import KERNEL_NAME
from tutorial_helpers.workshop import preflight

ROOT = Path(__file__).resolve().parent.parent
JUPYTER = Path(sys.executable).parent / "jupyter"  # What preflight.jupyterlab_server starts.
KERNEL = KERNEL_NAME


def call(url: str, method: str = "GET", body: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, method=method, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def jupyterlab():
    """A JupyterLab of the kit on 127.0.0.1, started as the README does; stopped afterwards."""
    if not JUPYTER.exists():
        pytest.skip(f"{JUPYTER} is missing: run scripts/setup first")
    try:
        with preflight.jupyterlab_server(timeout=90) as server:
            yield server
    except (RuntimeError, TimeoutError) as e:
        pytest.fail(str(e))


@pytest.mark.process
def test_jupyter_lab_serves_its_page_and_the_kits_kernel(jupyterlab):
    base, token, server = jupyterlab
    status, _ = call(f"{base}/api/kernelspecs")
    assert status == 403 or status == 401, f"the server answered without its token ({status})"

    status, page = call(f"{base}/lab?token={token}")
    assert status == 200, f"/lab answered {status}:\n{server.log_tail(40)}"
    assert b"JupyterLab" in page or b"jupyter-config-data" in page, page[:500]

    status, body = call(f"{base}/api/kernelspecs?token={token}")
    specs = json.loads(body)["kernelspecs"]
    assert KERNEL in specs, f"kernel {KERNEL!r} is not offered; offered: {sorted(specs)}"
    argv0 = Path(specs[KERNEL]["spec"]["argv"][0])
    assert argv0.parent == ROOT / ".venv" / "bin", f"the kernel runs {argv0}, not the kit's Python"

    status, body = call(f"{base}/api/kernels?token={token}", method="POST", body={"name": KERNEL})
    assert status == 201, f"starting a kernel answered {status}: {body[:500]!r}"
    kernel_id = json.loads(body)["id"]
    try:
        # Run a cell as JupyterLab does, over the kernel's WebSocket channel.
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/api/kernels/{kernel_id}/channels?token={token}", timeout=60)
        try:
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex,
                           "username": "test", "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": "import sys; print(sys.executable)", "silent": False,
                            "store_history": False, "user_expressions": {}, "allow_stdin": False},
            }))
            # The reply (shell) and the output (iopub) come in either order;
            # the cell is done when both the reply and "idle" have come.
            printed, reply, idle = "", None, False
            while reply is None or not idle:
                message = json.loads(ws.recv())
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if message["msg_type"] == "stream":
                    printed += message["content"]["text"]
                elif message["msg_type"] == "execute_reply":
                    reply = message["content"]
                elif message["msg_type"] == "status":
                    idle = message["content"]["execution_state"] == "idle"
        finally:
            ws.close()
        assert reply["status"] == "ok", reply
        assert Path(printed.strip()).parent == ROOT / ".venv" / "bin", f"the kernel runs {printed.strip()!r}"
    finally:
        status, _ = call(f"{base}/api/kernels/{kernel_id}?token={token}", method="DELETE")
        assert status == 204, f"stopping the kernel answered {status}"
