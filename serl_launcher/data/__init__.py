"""serl_launcher.data."""
