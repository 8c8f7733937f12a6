"""Legacy checkpoint rules: gan family (see zoo.tools.convert)."""

RULES: dict = {}
