"""Agents, one module each. `orchestrator_app.topology` imports them."""
