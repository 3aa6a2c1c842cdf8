"""The status page of `btfs watch --web`: a Starlette app served by hypercorn's trio worker
in the daemon's own nursery. settings.py reads [web] and --web; access.py is the token and
Host check every request passes; history.py answers the history questions on a read-only
Repo; app.py maps URLs to the daemon and to history.py; server.py runs it; static/ holds
the page."""
