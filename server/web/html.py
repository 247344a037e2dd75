"""Request-derived data written into HTML outside a template's autoescaping.

Jinja escapes text and attribute values; what the server adds to a fragment by itself (the
`_debug=1` comment) goes through here, so that no request text can end the context it is
written into.
"""

from __future__ import annotations

import json
from typing import Any


def debug_comment(data: Any) -> str:
    """`data` as JSON inside an HTML comment.

    A comment ends at `-->` or `--!>` and is broken by `<!--`; every one of them needs a `<`
    or a `>`. In JSON those characters only occur inside strings, where they are written as
    \\u003c and \\u003e (still the same JSON), so the comment holds no `<` or `>` at all,
    whatever the request put into the data.
    """
    text = json.dumps(data, indent=2, default=str, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e")
    return f"\n<!-- vitrine debug\n{text}\n-->\n"
