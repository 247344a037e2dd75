"""The visitor's own data: what is held about one visitor, its export and its deletion.

One set of rules for every way in; today the visitor's own, over HTTP (`GET|DELETE /v1/me`,
views.py). The SQL is the store's (`visitor_records`, `delete_visitors`).
"""
