"""Interlock for Docker Swarm: a level-triggered ingress controller."""
