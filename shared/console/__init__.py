"""The console: server-rendered pages (Jinja2) where a team sees and works its records.

Served by shared/functions/console.py under /api/console/. Jinja2 and nh3 are imported on the
first page, never when the app is indexed (tests/test_cold_start.py).
"""
