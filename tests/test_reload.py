"""Changes reach a worker within the check interval, and no request pays for a check."""

from __future__ import annotations

import os
import time

from server.shops import ShopRegistry
from widgets.base import Templates


def test_a_shop_config_is_looked_at_once_per_interval(tmp_path, monkeypatch) -> None:
    path = tmp_path / "s.toml"
    path.write_text('name = "One"\n')
    registry = ShopRegistry(tmp_path, check_interval_s=60)
    assert registry.get("s").name == "One"
    stats = []
    real_stat = type(path).stat
    monkeypatch.setattr(type(path), "stat", lambda self, *a, **k: stats.append(self) or real_stat(self, *a, **k))
    path.write_text('name = "Two"\n')
    for _ in range(50):
        assert registry.get("s").name == "One"  # within the interval: the config in memory
        assert registry.get("nope") is None
    assert len(stats) == 1  # the unknown shop, once; then remembered too
    registry.check_interval_s = 0
    assert registry.get("s").name == "Two"


def test_an_override_template_is_picked_up_after_the_interval_without_a_stat_per_render(tmp_path, monkeypatch) -> None:
    (tmp_path / "note.html").write_text("the shop's note")
    templates = Templates([tmp_path], check_interval_s=60)
    names = ["note-demo-x.html", "note-demo.html", "note.html"]
    assert templates.render(names) == ("the shop's note", "note.html")
    (tmp_path / "note-demo.html").write_text("designer's banner")
    calls = []
    real = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: calls.append(a) or real(*a, **k))
    for _ in range(50):
        assert templates.render(names)[1] == "note.html"
    assert calls == []  # no file system call while the interval runs
    monkeypatch.setattr(os, "stat", real)
    templates.check_interval_s = 0
    assert templates.render(names) == ("designer's banner", "note-demo.html")
    (tmp_path / "note-demo.html").write_text("designer's banner, second take")
    os.utime(tmp_path / "note-demo.html", ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert templates.render(names)[0] == "designer's banner, second take"
