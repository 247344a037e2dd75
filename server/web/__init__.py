"""The HTTP layer's front door: what every request goes through before an endpoint sees it."""
