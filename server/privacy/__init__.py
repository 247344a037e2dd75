"""The visitor's own data: what is held about one visitor, its export and its deletion.

One set of rules for every way in: the visitor over HTTP (`GET|DELETE /v1/me`, views.py),
the shop on the command line (`vitrine privacy export|delete`), and the retention purge of
inactive visitors (server/retention.py). The SQL is the store's (`visitor_records`,
`delete_visitors`, `inactive_visitors`).
"""
