"""serl_launcher.utils."""
