"""serl_launcher.networks."""
