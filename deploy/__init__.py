"""Deployment: proxy configs, container and Kubernetes files, and a local cluster."""
