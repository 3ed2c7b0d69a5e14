"""Grafana dashboards, Prometheus rules and Alertmanager configuration for optionsbot."""
