"""The documentation matches the code: template context keys and the README's commands."""

import re
from datetime import datetime
from pathlib import Path

from server.context import PageContext, VisitorContext
from server.device import UNKNOWN_DEVICE
from server.geo import Geo
from server.models import VisitorProfile
from server.traffic import TrafficSource

ROOT = Path(__file__).resolve().parent.parent


def _documented_visitor_keys() -> set[str]:
    text = (ROOT / "docs" / "templates.md").read_text()
    section = text.split("### `visitor`", 1)[1]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))


def test_template_visitor_context_is_documented():
    now = datetime(2024, 1, 1)
    ctx = VisitorContext(
        shop="demo", visitor_id="v", is_new_token=True,
        profile=VisitorProfile(visitor_id="v", first_seen=now, last_seen=now),
        device=UNKNOWN_DEVICE, geo=Geo(), source=TrafficSource(medium="direct", source=""), page=PageContext(),
    )
    assert set(ctx.as_dict()) == _documented_visitor_keys()


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "./run demo" in readme and "./run test" in readme
    assert "./run test" in (ROOT / ".ci" / "run").read_text()


def test_every_doc_linked_from_the_readme_exists():
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(((?:docs|server)/[^)]+)\)", readme):
        assert (ROOT / link.split("#", 1)[0]).exists(), link


def test_the_privacy_page_snippet_is_the_one_the_demo_shop_runs():
    """docs/privacy.md's "Download my data" and "Forget me" is what the browser test clicks."""
    text = (ROOT / "docs" / "privacy.md").read_text()
    section = text.split('## A privacy page: "Download my data" and "Forget me"', 1)[1]
    snippet = re.search(r"```html\n(.*?)```", section, re.S).group(1)
    assert "vitrine(command)" in snippet
    assert snippet in (ROOT / "server" / "demo" / "templates" / "privacy.html").read_text()


def test_every_audience_fact_and_built_in_audience_is_documented():
    from server.audiences import FACTS
    from server.audiences.book import BUILTIN_IDS

    text = (ROOT / "docs" / "audiences.md").read_text()
    facts = text.split("### Facts", 1)[1].split("\n\n", 2)[1]
    assert re.findall(r"^\| `([a-z_]+)` \|", facts, re.M) == list(FACTS)
    builtin = text.split("## Built-in audiences", 1)[1].split("\n\n", 2)[1]
    assert [i for i in re.findall(r"^\| `([a-z_<>]+)` \|", builtin, re.M) if i != "loyal_<tier>"] == list(BUILTIN_IDS)
    demo = (ROOT / "server" / "demo" / "demo.toml").read_text()
    assert all(name in demo for name in FACTS), "the demo config's comment names every fact"


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lowercased, punctuation but - and _ dropped,
    spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for heading in re.findall(r"^#{1,6}\s+(.*)$", text, flags=re.M):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def test_every_link_between_docs_points_at_a_file_and_a_heading_that_exist():
    assert _slug("`POST /v1/page?shop=S`") == "post-v1pageshops"
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert broken == []
