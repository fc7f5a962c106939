"""serl_launcher.transport."""
