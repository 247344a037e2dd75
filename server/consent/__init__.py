"""Consent: what the visitor allowed, what the shop's rule asks for, and what follows from both.

rules.py decides, per request, whether Vitrine may keep a profile of the visitor
(`personalization`) and record measurement events (`analytics`); regions.py holds the
country lists a `consent = "required_in"` rule names.
"""
