"""The web dashboard: a static single-page app served at ``/``, talking to ``/api`` like any client."""
