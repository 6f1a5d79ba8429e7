"""Attacks of a hostile cell on the sandbox, one test per attack, each run with and without the audit hook.

Run with ``python -m pytest tests/adversarial``. With
``CONFIDENTIAL_NB_REQUIRE_ALL_LAYERS=1`` any skipped test fails the run.
"""
