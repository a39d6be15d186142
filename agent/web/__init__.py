"""The review console: its pages, its JSON API and who may use them (docs/review.md).

``app`` builds the ASGI application ``medic run`` serves (agent/http.py), ``console``
holds the pages and the API, ``auth`` the token, sessions and CSRF tokens; the
templates and static files beside them are everything a browser loads.
"""
