"""The visitor's own data: what is held about one visitor, its export and its deletion.

One set of rules for every way in: the visitor over HTTP (`GET|DELETE /v1/me`, views.py)
and the shop on the command line (`vitrine privacy export|delete`). The SQL is the store's
(`visitor_records`, `delete_visitors`).
"""
