"""The web desk for agents, team leads and handling units."""
