"""Legacy checkpoint rules: autoencoders family (see zoo.tools.convert)."""

RULES: dict = {}
