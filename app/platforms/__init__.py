"""Which platforms each user or branch has connected, and in what state."""
