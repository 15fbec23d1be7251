"""Proxy configuration templates (Jinja2), shipped as package data."""
