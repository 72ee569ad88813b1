"""The operator console at ``/console``: static pages (no build step) over the ``/v1`` routes.

``auth`` holds accounts, password hashes, signed session cookies and CSRF tokens; ``app``
serves the pages and the login/logout/session routes; ``static/`` is the page itself.
"""
