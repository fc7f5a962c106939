"""serl_launcher.wrappers."""
