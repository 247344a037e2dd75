"""A real `vitrine` server in a subprocess, for the tests that need one over HTTP (overload,
durability under kill -9, the browser tests): a free port, a data directory with the demo
shop's config, the developer's own VITRINE_* settings left out, and a wait for health."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "server" / "demo" / "demo.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def demo_config_for_tests() -> str:
    """The demo shop's config without its hold-out and experiments: with them, which of a
    test's new visitors sees the personalization it checks would be left to the hash of a
    random id. The tests of experiments and the hold-out (tests/test_experiments.py) set
    their own."""
    text = DEMO_CONFIG.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^holdout = .*$", "", text)
    return text.split("\n[[experiments]]", 1)[0] + "\n"


def demo_experiments() -> str:
    """The demo config's own experiments (what demo_config_for_tests leaves out): the A/B
    test on its hero, for the tests that want it back."""
    return "\n[[experiments]]" + DEMO_CONFIG.read_text(encoding="utf-8").split("\n[[experiments]]", 1)[1]


def write_demo_config(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(demo_config_for_tests(), encoding="utf-8")
    return path


def with_demo_shop(data_dir: Path) -> Path:
    """`data_dir` with the demo shop's config (for tests) in its shops folder."""
    write_demo_config(data_dir / "shops" / "demo.toml")
    return data_dir


def server_env(**settings: str) -> dict[str, str]:
    """This process's environment without the developer's VITRINE_* settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINE_")}
    env.update(settings)
    return env


@dataclass
class Running:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path


@contextmanager
def running(
    command: str, data_dir: Path, env: dict[str, str], log_path: Path, start_timeout_s: float = 60,
    args: tuple[str, ...] = (),
) -> Iterator[Running]:
    """`vitrine --data-dir DIR COMMAND --port PORT` until the block ends (then stopped, or
    killed if it does not stop); the test fails with the server's output if it never answers."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "--data-dir", str(data_dir), command, "--port", str(port), *args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while not healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`vitrine {command}` did not answer {url}/v1/health; its output:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield Running(url, port, process, log_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
