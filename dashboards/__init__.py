"""Grafana dashboards as code (grafana-foundation-sdk), their provisioning, and Prometheus config.

    python -m dashboards.build          regenerate dashboards/json/*.json from the code
    finpulse dashboards build|push      the same from the CLI; push publishes to a Grafana

Layout: ``common.py`` (datasources, the SQL query type, panel helpers), one module per
dashboard (``sentiment.py`` for analysts, ``pipeline.py`` for operators), ``build.py``
(render and write), ``json/`` (the generated, committed dashboards), ``provisioning/``
(Grafana datasources and dashboard providers), ``prometheus/`` (scrape config, alerting
rules and their unit tests, Alertmanager config).
"""
