"""Alerts for technicians: one alert per problem, its lifecycle, routing to the right people,
notifications, an audit trail in SQLite, and the reports managers ask for.

Modules, one job each: ``model`` (the shared vocabulary), ``config`` (the ``alerting:``
section), ``routing`` (which people an alert goes to), ``store`` (SQLite), ``engine`` (the
lifecycle, fed by detection's decisions), ``lines`` (the ``alerts`` measurement),
``selfcheck`` (is the collector itself working), ``report`` (MTTA, MTTR, Pareto),
``commands`` (what the CLI and the web page call), ``notify``/``message``/``channels``
(sending).
"""
