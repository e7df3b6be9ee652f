"""task-bridge."""
