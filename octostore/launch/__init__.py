"""Starting workers: local processes now, SSH hosts later (#5)."""
