"""serl_launcher.agents."""
