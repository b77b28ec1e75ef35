"""lastseen."""
